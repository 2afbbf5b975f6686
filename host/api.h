/* api.h - the flyte-api as a pack sees it: discovery, registration,
 * taking actions, posting results and events, the API's health.
 *
 * Plain C on http.h and jansson. URLs come from links found by rel suffix,
 * never built by hand (flyte-api.md), and only from a reply's own
 * top-level links. Every request carries the token, so each goes only to
 * an origin of the flyte-api (flyte_api_url_allowed); any other URL is
 * refused, logged, and not sent.
 */
#ifndef FLYTE_API_H
#define FLYTE_API_H

#include <jansson.h>
#include <stddef.h>

#include "http.h"

typedef struct {
  char *packs_url;  /* rel ends with pack/listPacks */
  char *health_url; /* rel ends with info/health; may be NULL */
} flyte_api_root;

typedef struct {
  char *id;
  char *take_url;  /* rel ends with takeAction */
  char *event_url; /* rel ends with event */
} flyte_api_pack;

typedef struct {
  char *command;    /* owned */
  json_t *input;    /* owned; NULL when the action has no input */
  char *input_error; /* owned; set when the input cannot be decoded */
  char *result_url; /* owned */
  char *id;         /* the action's id, from its result link, for logs */
} flyte_action;

typedef enum {
  FLYTE_TAKE_ERROR = -1,
  FLYTE_TAKE_ACTION = 0,      /* 200: *out filled */
  FLYTE_TAKE_NONE = 1,        /* 204 */
  FLYTE_TAKE_UNKNOWN_PACK = 2, /* 404: register again */
  FLYTE_TAKE_DENIED = 3        /* 401/403: the token is missing or bad */
} flyte_take_result;

/* flyte_api_discover and flyte_api_register return this for 401/403. */
#define FLYTE_API_DENIED (-2)

/* The most bytes of JSON the host posts as one result or event: as much
 * as it reads in one take reply (the flyte-api keeps events in MongoDB
 * documents, which hold at most 16 MB). */
#define FLYTE_MAX_EVENT_BYTES ((size_t)8 << 20)

/* The href of the first link whose rel ends with `suffix`, or NULL.
 * Borrowed from `links`. */
const char *flyte_api_find_link(const json_t *links, const char *suffix);

/* Called after every request to the API with its endpoint ("discovery",
 * "register", "take", "result", "event"), its status (0 when no response
 * came) and how long it took: for metrics. One per process; set it before
 * any thread talks to the API. */
typedef void (*flyte_api_observer)(void *ud, const char *endpoint,
                                   long status, double seconds);
void flyte_api_observe(flyte_api_observer fn, void *ud);

/* GET {api}/v1. Returns 0, or -1 (FLYTE_API_DENIED for 401/403) with a
 * message. Adds the origin of {api} to the allowed origins before the
 * request, and, when it succeeds, the origin of every link href in the
 * discovery document. */
int flyte_api_discover(flyte_http *h, const char *api, flyte_api_root *out,
                       char *err, size_t errlen);
void flyte_api_root_free(flyte_api_root *r);

/* The parsing half of flyte_api_discover: the body of a 200 from `url`
 * (named in messages). Returns 0, or -1 with a message and *out zeroed. */
int flyte_api_parse_discovery(const char *url, const char *body, size_t len,
                              flyte_api_root *out, char *err, size_t errlen);

/* POST the registration body. Returns 0, or -1 (FLYTE_API_DENIED for
 * 401/403) with a message. */
int flyte_api_register(flyte_http *h, const char *packs_url, const char *body,
                       size_t len, flyte_api_pack *out, char *err,
                       size_t errlen);
void flyte_api_pack_free(flyte_api_pack *p);

/* The parsing half of flyte_api_register: the body of a 201. Returns 0, or
 * -1 with a message and *out zeroed. */
int flyte_api_parse_registration(const char *body, size_t len,
                                 flyte_api_pack *out, char *err,
                                 size_t errlen);

/* A take reply over the HTTP client's cap on a body is read as it streams
 * (flyte_http_req.overflow = flyte_take_scan_feed): only its top-level
 * "command" and "links" are kept. finish: the action, completed with a
 * FATAL naming `size` and `limit` (out->input_error says so), or
 * FLYTE_TAKE_ERROR when its result link cannot be found. */
typedef struct flyte_take_scan flyte_take_scan;
flyte_take_scan *flyte_take_scan_new(void);
void flyte_take_scan_free(flyte_take_scan *t);
void flyte_take_scan_feed(void *t, const char *p, size_t n);
flyte_take_result flyte_take_scan_finish(flyte_take_scan *t, long status,
                                         size_t size, size_t limit,
                                         flyte_action *out, char *err,
                                         size_t errlen);

flyte_take_result flyte_api_take(flyte_http *h, const char *take_url,
                                 flyte_action *out, char *err, size_t errlen);
void flyte_action_free(flyte_action *a);

/* The parsing half of flyte_api_take: what a response with this status and
 * body means. *out is filled (caller frees) only for FLYTE_TAKE_ACTION.
 * The result link is taken from the reply's top-level `links` alone. The
 * reply's envelope is read even when its `input` cannot be decoded: then
 * out->input is NULL and out->input_error says why (jansson's reason), so
 * that the action is completed with a FATAL. A reply that is not an
 * object, or whose links cannot be read, is FLYTE_TAKE_ERROR. */
flyte_take_result flyte_api_parse_take(long status, const char *body,
                                       size_t len, flyte_action *out,
                                       char *err, size_t errlen);

/* POSTs a result or event body (endpoint: "result" or "event"). Returns the
 * HTTP status, or -1 when no response came (err says why; also when url is
 * not an origin of the API, and then nothing was sent). On a status other
 * than 202 err holds the start of the response body. */
long flyte_api_post(flyte_http *h, const char *endpoint, const char *url,
                    const char *body, size_t len, char *err, size_t errlen);

/* GET the API's health link: 1 up, 0 down, with a status line. */
int flyte_api_health(flyte_http *h, const char *health_url, char *status,
                     size_t n);

/* Whether the token may go to url: 0 when its origin (scheme, host and
 * port, the port defaulted, compared without regard to case; parsed by
 * libcurl) is one of the flyte-api's; else -1 with a message in err naming
 * the URL's origin and the allowed ones. Before any discovery no origin is
 * allowed. Thread-safe. */
int flyte_api_url_allowed(const char *url, char *err, size_t errlen);

/* Adds url's origin to the allowed ones (flyte_api_discover does, for the
 * root and the discovery document's links). Returns 0, or -1 when url has
 * no http(s) origin or the list is full (32 origins). */
int flyte_api_allow_url(const char *url);

/* Forgets every allowed origin (for tests). */
void flyte_api_origins_reset(void);

/* A FATAL result body with createdAt now, for the FATALs the host itself
 * posts (timeouts, shutdown, recovery). Caller frees; NULL when out of
 * memory. */
char *flyte_api_fatal_body(const char *text);

#endif
