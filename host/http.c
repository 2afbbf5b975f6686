/* http.c - a small HTTP client on libcurl, one per thread.
 *
 * Every request is a call: an easy handle with its own capped buffers,
 * driven by an event loop's multi handle (loop.c). Calls are kept in a
 * small pool, set up once with what every request shares, so a request
 * sets only its own options. A blocking request is a call on a loop of the
 * client's own.
 */
#include "http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define DEFAULT_MAX_BODY (8u << 20)
/* The most a body streamed past the cap (flyte_http_req.overflow) may be. */
#define SINK_MAX ((size_t)1 << 30)
#define MAX_HEADERS (64u << 10)
#define POOL_MAX 4 /* idle calls kept for reuse: each holds some 20 KB */
#define KEEP_BUFFER (64u << 10) /* a bigger buffer is freed on release */

typedef struct {
  char *data;
  size_t len, cap, max;
  int overflow;
  int collect; /* headers: keep them for this request */
  /* a body's: where it goes once over the cap, and how much went */
  flyte_http_sink sink;
  void *sink_ud;
  int sinking;
  size_t sunk;
} buffer;

struct flyte_http_call {
  flyte_transfer transfer; /* first: the loop finds the call through it */
  flyte_http *client;
  flyte_loop *loop;
  CURL *curl;
  buffer body, headers;
  struct curl_slist *list; /* this request's own headers, or NULL */
  char *post;              /* a copy of the request body */
  int running;
  CURLcode result;
  char error[256];
  flyte_http_done done;
  void *ud;
  flyte_http_call *next; /* in the pool */
};

struct flyte_http {
  char *auth_header; /* "Authorization: Bearer ..." or NULL */
  long timeout_ms;
  size_t max_body;
  int insecure;
  const atomic_int *cancel;
  long connects;
  /* header lists built once: JSON requests without and with a body */
  struct curl_slist *json_get, *json_post;
  flyte_http_call *pool;
  int npool;
  flyte_loop *own_loop;       /* for blocking requests, made on first use */
  flyte_http_call *last;      /* the last blocking call: its response */
};

int flyte_http_global_init(void) {
  return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1;
}

void flyte_http_global_cleanup(void) { curl_global_cleanup(); }

/* Appends to a capped buffer; returns 0, or -1 when over the cap or out of
 * memory (the buffer keeps what it had). */
static int buffer_add(buffer *b, const char *p, size_t n) {
  if (n > b->max - b->len) {
    b->overflow = 1;
    return -1;
  }
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n + 1) cap *= 2;
    if (cap > b->max + 1) cap = b->max + 1;
    char *data = realloc(b->data, cap);
    if (data == NULL) return -1;
    b->data = data;
    b->cap = cap;
  }
  memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = '\0';
  return 0;
}

static void buffer_reset(buffer *b) {
  b->len = 0;
  b->overflow = 0;
  if (b->cap > KEEP_BUFFER) {
    free(b->data);
    b->data = NULL;
    b->cap = 0;
  }
  if (b->data) b->data[0] = '\0';
}

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
  buffer *b = ud;
  n *= size;
  if (!b->sinking && buffer_add(b, p, n) == 0) return n;
  if (b->sink == NULL) return 0;
  /* even streamed, a body ends somewhere (a compression bomb would not) */
  if (b->sunk > SINK_MAX - n) {
    b->overflow = 1;
    return 0;
  }
  if (!b->sinking) { /* over the cap: what was kept goes first */
    b->sinking = 1;
    b->sink(b->sink_ud, b->data ? b->data : "", b->len);
    b->sunk = b->len;
    buffer_reset(b);
  }
  b->sink(b->sink_ud, p, n);
  b->sunk += n;
  return n;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud) {
  buffer *b = ud;
  if (!b->collect) return size * n;
  /* A new status line (after a redirect or 100-continue) starts afresh. */
  if (n * size > 5 && strncmp(p, "HTTP/", 5) == 0) buffer_reset(b);
  return buffer_add(b, p, size * n) == 0 ? size * n : 0;
}

static int on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut,
                       curl_off_t un) {
  (void)dt, (void)dn, (void)ut, (void)un;
  const atomic_int *cancel = ud;
  return cancel && atomic_load(cancel) ? 1 : 0;
}

/* Sockets are close-on-exec: a program pack code starts (io.popen) must
 * not inherit the host's connections (libcurl 7.88 does not set it). */
static curl_socket_t open_socket(void *ud, curlsocktype purpose,
                                 struct curl_sockaddr *a) {
  (void)ud, (void)purpose;
  return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

/* Appends lines to a header list; NULL when out of memory (list freed). */
static struct curl_slist *headers_of(struct curl_slist *list,
                                     const char *const *lines) {
  for (; *lines; lines++) {
    struct curl_slist *grown = curl_slist_append(list, *lines);
    if (grown == NULL) {
      curl_slist_free_all(list);
      return NULL;
    }
    list = grown;
  }
  return list;
}

flyte_http *flyte_http_new(const flyte_http_opts *opts) {
  flyte_http *h = calloc(1, sizeof *h);
  if (h == NULL) return NULL;
  if (opts->bearer && opts->bearer[0]) {
    size_t n = strlen(opts->bearer) + sizeof "Authorization: Bearer ";
    h->auth_header = malloc(n);
    if (h->auth_header == NULL) goto fail;
    snprintf(h->auth_header, n, "Authorization: Bearer %s", opts->bearer);
  }
  h->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : 10000;
  h->max_body = opts->max_body ? opts->max_body : DEFAULT_MAX_BODY;
  h->insecure = opts->insecure;
  h->cancel = opts->cancel;

  /* libcurl would otherwise wait for "100 Continue" on larger bodies. */
  const char *get[] = {"Accept: application/json", "Expect:", NULL};
  const char *post[] = {"Accept: application/json",
                        "Content-Type: application/json", "Expect:", NULL};
  struct curl_slist *auth = NULL;
  if (h->auth_header &&
      (auth = curl_slist_append(NULL, h->auth_header)) == NULL)
    goto fail;
  h->json_get = headers_of(auth, get);
  if (h->json_get == NULL) goto fail;
  auth = NULL;
  if (h->auth_header &&
      (auth = curl_slist_append(NULL, h->auth_header)) == NULL)
    goto fail;
  h->json_post = headers_of(auth, post);
  if (h->json_post == NULL) goto fail;
  return h;
fail:
  flyte_http_free(h);
  return NULL;
}

static void call_free(flyte_http_call *c) {
  if (c == NULL) return;
  if (c->curl) curl_easy_cleanup(c->curl);
  curl_slist_free_all(c->list);
  free(c->post);
  free(c->body.data);
  free(c->headers.data);
  free(c);
}

void flyte_http_free(flyte_http *h) {
  if (h == NULL) return;
  if (h->last) flyte_http_release(h->last);
  for (flyte_http_call *c = h->pool, *next; c; c = next) {
    next = c->next;
    call_free(c);
  }
  flyte_loop_free(h->own_loop);
  curl_slist_free_all(h->json_get);
  curl_slist_free_all(h->json_post);
  if (h->auth_header) {
    /* The token is a secret: do not leave it in freed memory. */
    memset(h->auth_header, 0, strlen(h->auth_header));
    free(h->auth_header);
  }
  free(h);
}

long flyte_http_connects(const flyte_http *h) { return h->connects; }

size_t flyte_http_max_body(const flyte_http *h) { return h->max_body; }

static void on_done(flyte_transfer *t, CURLcode result);

/* A call from the pool, or a new one set up with what every request of
 * this client shares. NULL when out of memory. */
static flyte_http_call *call_get(flyte_http *h) {
  flyte_http_call *c = h->pool;
  if (c) {
    h->pool = c->next;
    h->npool--;
    c->next = NULL;
    return c;
  }
  c = calloc(1, sizeof *c);
  if (c == NULL || (c->curl = curl_easy_init()) == NULL) goto fail;
  c->client = h;
  c->transfer.done = on_done;
  c->body.max = h->max_body;
  c->headers.max = MAX_HEADERS;
  CURL *e = c->curl;
  if (curl_easy_setopt(e, CURLOPT_PRIVATE, c) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_WRITEDATA, &c->body) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_HEADERDATA, &c->headers) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_socket) !=
          CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "") != CURLE_OK)
    goto fail;
  if (h->cancel &&
      (curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, on_progress) !=
           CURLE_OK ||
       curl_easy_setopt(e, CURLOPT_XFERINFODATA, (void *)h->cancel) !=
           CURLE_OK ||
       curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L) != CURLE_OK))
    goto fail;
  if (h->insecure &&
      (curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L) != CURLE_OK ||
       curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L) != CURLE_OK))
    goto fail;
  return c;
fail:
  call_free(c);
  return NULL;
}

void flyte_http_release(flyte_http_call *c) {
  if (c == NULL) return;
  flyte_http *h = c->client;
  if (c->running) flyte_loop_remove(c->loop, c->curl);
  c->running = 0;
  /* the handle must not keep pointers to what is freed */
  curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, NULL);
  curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, NULL);
  curl_slist_free_all(c->list);
  c->list = NULL;
  free(c->post);
  c->post = NULL;
  buffer_reset(&c->body);
  c->body.sink = NULL;
  c->body.sink_ud = NULL;
  c->body.sinking = 0;
  c->body.sunk = 0;
  buffer_reset(&c->headers);
  if (h->last == c) h->last = NULL;
  if (h->npool >= POOL_MAX) {
    call_free(c);
    return;
  }
  c->next = h->pool;
  h->pool = c;
  h->npool++;
}

/* Sets the request's own options on the call's handle. 0, or -1 with a
 * message in c->error. */
static int setup(flyte_http_call *c, const flyte_http_req *req) {
  flyte_http *h = c->client;
  CURL *e = c->curl;
  CURLcode cc;
  c->headers.collect = req->want_headers;
  c->body.sink = req->overflow;
  c->body.sink_ud = req->overflow_ud;
  c->body.sinking = 0;
  c->body.sunk = 0;
  int get = strcmp(req->method, "GET") == 0;
  int head = strcmp(req->method, "HEAD") == 0;
  int post = strcmp(req->method, "POST") == 0;
  const struct curl_slist *headers;
  if (req->json && req->headers == NULL) {
    headers = req->body ? h->json_post : h->json_get;
  } else { /* a request of pack code: its own headers */
    /* the list starts non-empty, so NULL below means out of memory */
    if ((c->list = curl_slist_append(NULL, "Expect:")) == NULL) goto nomem;
    const char *auth[] = {h->auth_header, NULL};
    if (h->auth_header && (c->list = headers_of(c->list, auth)) == NULL)
      goto nomem;
    if (req->headers && (c->list = headers_of(c->list, req->headers)) == NULL)
      goto nomem;
    headers = c->list;
  }
  if (req->body) {
    /* libcurl reads the body while the call runs: keep a copy */
    if ((c->post = malloc(req->body_len + 1)) == NULL) goto nomem;
    memcpy(c->post, req->body, req->body_len);
    c->post[req->body_len] = '\0';
  }
  long timeout = req->timeout_ms > 0 ? req->timeout_ms : h->timeout_ms;
  if ((cc = curl_easy_setopt(e, CURLOPT_URL, req->url)) != CURLE_OK ||
      (cc = curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers)) != CURLE_OK ||
      (cc = curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout)) != CURLE_OK)
    goto setopt_failed;
  if (get || head || (req->body == NULL && !post)) {
    /* no body: no POST semantics (DELETE sends no Content-Type); a POST
     * always says Content-Length, which some proxies insist on */
    if ((cc = curl_easy_setopt(e, CURLOPT_HTTPGET, 1L)) != CURLE_OK ||
        (cc = curl_easy_setopt(e, CURLOPT_NOBODY, head ? 1L : 0L)) !=
            CURLE_OK ||
        (cc = curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST,
                               get || head ? NULL : req->method)) != CURLE_OK)
      goto setopt_failed;
  } else {
    /* POST semantics carry the body; other methods rename the request */
    if ((cc = curl_easy_setopt(e, CURLOPT_NOBODY, 0L)) != CURLE_OK ||
        (cc = curl_easy_setopt(e, CURLOPT_POST, 1L)) != CURLE_OK ||
        (cc = curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
                               (curl_off_t)(req->body ? req->body_len : 0))) !=
            CURLE_OK ||
        (cc = curl_easy_setopt(e, CURLOPT_POSTFIELDS,
                               c->post ? c->post : "")) != CURLE_OK ||
        (cc = curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST,
                               post ? NULL : req->method)) != CURLE_OK)
      goto setopt_failed;
  }
  return 0;
nomem:
  snprintf(c->error, sizeof c->error, "out of memory");
  return -1;
setopt_failed:
  snprintf(c->error, sizeof c->error, "libcurl: %s", curl_easy_strerror(cc));
  return -1;
}

static void on_done(flyte_transfer *t, CURLcode result) {
  flyte_http_call *c = (flyte_http_call *)t;
  c->running = 0;
  c->result = result;
  long connects = 0;
  if (curl_easy_getinfo(c->curl, CURLINFO_NUM_CONNECTS, &connects) ==
      CURLE_OK)
    c->client->connects += connects;
  if (c->done) c->done(c, c->ud);
}

flyte_http_call *flyte_http_start(flyte_http *h, flyte_loop *loop,
                                  const flyte_http_req *req,
                                  flyte_http_done done, void *ud, char *err,
                                  size_t errlen) {
  flyte_http_call *c = call_get(h);
  if (c == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  c->error[0] = '\0';
  c->loop = loop;
  c->done = done;
  c->ud = ud;
  c->result = CURLE_OK;
  if (setup(c, req) != 0) {
    snprintf(err, errlen, "%s", c->error);
    flyte_http_release(c);
    return NULL;
  }
  if (flyte_loop_add(loop, c->curl) != 0) {
    snprintf(err, errlen, "libcurl refused the transfer");
    flyte_http_release(c);
    return NULL;
  }
  c->running = 1;
  return c;
}

int flyte_http_result(flyte_http_call *c, flyte_http_resp *resp) {
  memset(resp, 0, sizeof *resp);
  if (c->error[0]) {
    snprintf(resp->error, sizeof resp->error, "%s", c->error);
    return -1;
  }
  if (c->result != CURLE_OK) {
    if (c->body.overflow)
      snprintf(resp->error, sizeof resp->error,
               "response body larger than %zu bytes",
               c->body.sinking ? SINK_MAX : c->body.max);
    else if (c->result == CURLE_ABORTED_BY_CALLBACK)
      snprintf(resp->error, sizeof resp->error, "request cancelled");
    else
      snprintf(resp->error, sizeof resp->error, "%s",
               curl_easy_strerror(c->result));
    return -1;
  }
  curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &resp->status);
  resp->body = c->body.data ? c->body.data : "";
  resp->body_len = c->body.len;
  resp->overflowed = c->body.sinking ? c->body.sunk : 0;
  resp->headers = c->headers.data ? c->headers.data : "";
  resp->headers_len = c->headers.len;
  return 0;
}

static void blocking_done(flyte_http_call *c, void *ud) {
  (void)c;
  *(int *)ud = 1;
}

int flyte_http_request(flyte_http *h, const flyte_http_req *req,
                       flyte_http_resp *resp) {
  memset(resp, 0, sizeof *resp);
  if (h->last) flyte_http_release(h->last);
  char err[256];
  if (h->own_loop == NULL &&
      (h->own_loop = flyte_loop_new(err, sizeof err)) == NULL) {
    snprintf(resp->error, sizeof resp->error, "%s", err);
    return -1;
  }
  int done = 0;
  flyte_http_call *c =
      flyte_http_start(h, h->own_loop, req, blocking_done, &done, err,
                       sizeof err);
  if (c == NULL) {
    snprintf(resp->error, sizeof resp->error, "%s", err);
    return -1;
  }
  /* a second at most between looks at the cancel flag */
  while (!done) {
    if (h->cancel && atomic_load(h->cancel)) {
      flyte_http_release(c);
      snprintf(resp->error, sizeof resp->error, "request cancelled");
      return -1;
    }
    if (flyte_loop_run_once(h->own_loop, 1.0) != 0) {
      flyte_http_release(c);
      snprintf(resp->error, sizeof resp->error, "the event loop failed");
      return -1;
    }
  }
  h->last = c;
  return flyte_http_result(c, resp);
}
