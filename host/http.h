/* http.h - a small HTTP client on libcurl, one per thread.
 *
 * Plain C. A request runs as a call on an event loop (loop.h), many at once,
 * or blocking on a loop of the client's own. A client keeps a few easy
 * handles for reuse; connections belong to the loop's multi handle, so they
 * are kept alive between requests. Response bodies are capped: a huge or
 * endless body is an error, not an out-of-memory.
 */
#ifndef FLYTE_HTTP_H
#define FLYTE_HTTP_H

#include <stdatomic.h>
#include <stddef.h>

#include "loop.h"

typedef struct flyte_http flyte_http;

typedef struct {
  const char *bearer;       /* token for "Authorization: Bearer"; NULL: none */
  int insecure;             /* skip TLS verification */
  long timeout_ms;          /* default per-request timeout */
  size_t max_body;          /* cap on a response body; 0: 8 MiB */
  const atomic_int *cancel; /* when non-zero, requests stop; may be NULL */
} flyte_http_opts;

/* Where the bytes of a body go once it outgrows the cap (see below). */
typedef void (*flyte_http_sink)(void *ud, const char *p, size_t n);

typedef struct {
  const char *method; /* "GET", "POST", ... */
  const char *url;
  const char *body; /* may be NULL */
  size_t body_len;
  const char *const *headers; /* "Name: value" lines, NULL-ended; may be NULL */
  long timeout_ms;            /* 0: the client's default */
  int json;                   /* send Accept (and Content-Type) JSON headers */
  int want_headers;           /* collect response headers */
  /* A body over the cap is an error unless `overflow` is set: then the
   * whole body, from its first byte, goes to overflow(overflow_ud, ...) as
   * it arrives (none of it is kept), and the response is read to its end
   * (up to 1 GiB: past that, an error) with resp->body empty and
   * resp->overflowed its size. */
  flyte_http_sink overflow;
  void *overflow_ud;
} flyte_http_req;

typedef struct {
  long status;        /* HTTP status; 0 when no response was read */
  const char *body;   /* NUL-terminated; borrowed until the next request */
  size_t body_len;
  size_t overflowed;  /* with req->overflow: the body's size when it
                       * outgrew the cap (and went there), else 0 */
  const char *headers; /* raw header block when asked for; borrowed */
  size_t headers_len;
  char error[256];    /* what went wrong when the request failed */
} flyte_http_resp;

/* Call once from main before any thread starts (curl_global_init). */
int flyte_http_global_init(void);
void flyte_http_global_cleanup(void);

/* Copies what it needs from opts. Returns NULL when out of memory. */
flyte_http *flyte_http_new(const flyte_http_opts *opts);
void flyte_http_free(flyte_http *h);

/* Sends a request and reads the whole response, blocking. Returns 0 when a
 * response arrived (whatever its status), a negative number when the
 * request failed (resp->error says why). */
int flyte_http_request(flyte_http *h, const flyte_http_req *req,
                       flyte_http_resp *resp);

/* A request running on an event loop. */
typedef struct flyte_http_call flyte_http_call;
typedef void (*flyte_http_done)(flyte_http_call *call, void *ud);

/* Starts a request on `loop` (the loop of the calling thread); `done` runs
 * on that loop once it has ended. What `req` points to is copied. Returns
 * the call, or NULL with a message when it could not start. */
flyte_http_call *flyte_http_start(flyte_http *h, flyte_loop *loop,
                                  const flyte_http_req *req,
                                  flyte_http_done done, void *ud, char *err,
                                  size_t errlen);
/* A finished call's outcome, as flyte_http_request's; resp is borrowed
 * until the call is released. */
int flyte_http_result(flyte_http_call *call, flyte_http_resp *resp);
/* Releases a finished call, or cancels a running one (done will not run). */
void flyte_http_release(flyte_http_call *call);

/* The cap on a response body (flyte_http_opts.max_body, or its default). */
size_t flyte_http_max_body(const flyte_http *h);

/* Number of new connections this client opened (for tests and figures). */
long flyte_http_connects(const flyte_http *h);

#endif
