/* http.c - a small HTTP client on libcurl, one per thread.
 *
 * One easy handle per client, reused so that libcurl keeps the connection
 * alive; response bodies go into a capped buffer owned by the client. The
 * client drives its handle through a multi handle of its own rather than
 * curl_easy_perform, which polls an empty set of sockets before every
 * request: one syscall in eleven of an action's (README, Performance).
 */
#include "http.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_MAX_BODY (8u << 20)
#define MAX_HEADERS (64u << 10)

typedef struct {
  char *data;
  size_t len, cap, max;
  int overflow;
  int collect; /* headers: keep them for this request */
} buffer;

struct flyte_http {
  CURL *curl;
  CURLM *multi; /* owns the connection cache: lives as long as curl */
  char *auth_header; /* "Authorization: Bearer ..." or NULL */
  long timeout_ms;
  buffer body, headers;
  long connects;
  /* header lists built once: JSON requests without and with a body */
  struct curl_slist *json_get, *json_post;
};

int flyte_http_global_init(void) {
  return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1;
}

void flyte_http_global_cleanup(void) { curl_global_cleanup(); }

/* Appends to a capped buffer; returns 0, or -1 when over the cap or out of
 * memory (the buffer keeps what it had). */
static int buffer_add(buffer *b, const char *p, size_t n) {
  if (b->len + n + 1 > b->max) {
    b->overflow = 1;
    return -1;
  }
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n + 1) cap *= 2;
    if (cap > b->max) cap = b->max;
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
  if (b->data) b->data[0] = '\0';
}

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
  buffer *b = ud;
  return buffer_add(b, p, size * n) == 0 ? size * n : 0;
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
  h->curl = curl_easy_init();
  h->multi = curl_multi_init();
  if (h->curl == NULL || h->multi == NULL) goto fail;
  /* the connections kept for reuse: curl_easy_perform's number */
  if (curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, 5L) != CURLM_OK)
    goto fail;
  if (opts->bearer && opts->bearer[0]) {
    size_t n = strlen(opts->bearer) + sizeof "Authorization: Bearer ";
    h->auth_header = malloc(n);
    if (h->auth_header == NULL) goto fail;
    snprintf(h->auth_header, n, "Authorization: Bearer %s", opts->bearer);
  }
  h->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : 10000;
  h->body.max = opts->max_body ? opts->max_body : DEFAULT_MAX_BODY;
  h->headers.max = MAX_HEADERS;

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
  if (h->auth_header &&
      (auth = curl_slist_append(NULL, h->auth_header)) == NULL)
    goto fail;
  h->json_post = headers_of(h->auth_header ? auth : NULL, post);
  if (h->json_post == NULL) goto fail;

  /* what every request shares is set once: a request sets only its own */
  CURL *c = h->curl;
  if (curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
      curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body) != CURLE_OK ||
      curl_easy_setopt(c, CURLOPT_WRITEDATA, &h->body) != CURLE_OK ||
      curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header) != CURLE_OK ||
      curl_easy_setopt(c, CURLOPT_HEADERDATA, &h->headers) != CURLE_OK ||
      curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK ||
      curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L) != CURLE_OK ||
      curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, "") != CURLE_OK)
    goto fail;
  if (opts->cancel &&
      (curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress) !=
           CURLE_OK ||
       curl_easy_setopt(c, CURLOPT_XFERINFODATA, (void *)opts->cancel) !=
           CURLE_OK ||
       curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L) != CURLE_OK))
    goto fail;
  if (opts->insecure &&
      (curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L) != CURLE_OK ||
       curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L) != CURLE_OK))
    goto fail;
  return h;
fail:
  flyte_http_free(h);
  return NULL;
}

void flyte_http_free(flyte_http *h) {
  if (h == NULL) return;
  if (h->curl) curl_easy_cleanup(h->curl);
  if (h->multi) curl_multi_cleanup(h->multi);
  curl_slist_free_all(h->json_get);
  curl_slist_free_all(h->json_post);
  if (h->auth_header) {
    /* The token is a secret: do not leave it in freed memory. */
    memset(h->auth_header, 0, strlen(h->auth_header));
    free(h->auth_header);
  }
  free(h->body.data);
  free(h->headers.data);
  free(h);
}

long flyte_http_connects(const flyte_http *h) { return h->connects; }

/* curl_easy_perform without its poll before the first step: runs the
 * transfer on the client's multi handle until it is done. curl_multi_poll
 * waits (as easy_perform's does) even when libcurl has no socket to watch,
 * and for a second at most, so the progress callback (and with it a
 * cancel) runs as often as under curl_easy_perform. Returns the transfer's
 * result; when the multi handle itself fails, *mc says how. */
static CURLcode perform(flyte_http *h, CURLMcode *mc) {
  CURLM *m = h->multi;
  *mc = curl_multi_add_handle(m, h->curl);
  if (*mc == CURLM_ADDED_ALREADY) { /* a failed remove: take it out again */
    curl_multi_remove_handle(m, h->curl);
    *mc = curl_multi_add_handle(m, h->curl);
  }
  if (*mc != CURLM_OK) return CURLE_FAILED_INIT;
  int running = 1;
  while ((*mc = curl_multi_perform(m, &running)) == CURLM_OK && running)
    if ((*mc = curl_multi_poll(m, NULL, 0, 1000, NULL)) != CURLM_OK) break;
  /* only a DONE message says how the transfer ended */
  CURLcode cc = CURLE_FAILED_INIT;
  int left;
  CURLMsg *msg;
  while ((msg = curl_multi_info_read(m, &left)) != NULL)
    if (msg->msg == CURLMSG_DONE && msg->easy_handle == h->curl)
      cc = msg->data.result;
  CURLMcode removed = curl_multi_remove_handle(m, h->curl);
  if (*mc == CURLM_OK) *mc = removed;
  return cc;
}

int flyte_http_request(flyte_http *h, const flyte_http_req *req,
                       flyte_http_resp *resp) {
  CURL *c = h->curl;
  struct curl_slist *list = NULL;
  int rc = -1;
  CURLcode cc;

  memset(resp, 0, sizeof *resp);
  buffer_reset(&h->body);
  buffer_reset(&h->headers);
  h->headers.collect = req->want_headers;

  int get = strcmp(req->method, "GET") == 0;
  int head = strcmp(req->method, "HEAD") == 0;
  const struct curl_slist *headers;
  if (req->json && req->headers == NULL) {
    headers = req->body ? h->json_post : h->json_get;
  } else { /* a request of pack code: its own headers */
    /* the list starts non-empty, so NULL below means out of memory */
    if ((list = curl_slist_append(NULL, "Expect:")) == NULL) goto nomem;
    const char *auth[] = {h->auth_header, NULL};
    if (h->auth_header && (list = headers_of(list, auth)) == NULL) goto nomem;
    if (req->headers && (list = headers_of(list, req->headers)) == NULL)
      goto nomem;
    headers = list;
  }

  long timeout = req->timeout_ms > 0 ? req->timeout_ms : h->timeout_ms;
  if ((cc = curl_easy_setopt(c, CURLOPT_URL, req->url)) != CURLE_OK ||
      (cc = curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers)) != CURLE_OK ||
      (cc = curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout)) != CURLE_OK ||
      (cc = curl_easy_setopt(c, CURLOPT_NOBODY, head ? 1L : 0L)) != CURLE_OK)
    goto setopt_failed;
  int post = strcmp(req->method, "POST") == 0;
  if (get || head || (req->body == NULL && !post)) {
    /* no body: no POST semantics (DELETE sends no Content-Type); a POST
     * always says Content-Length, which some proxies insist on */
    if ((cc = curl_easy_setopt(c, CURLOPT_HTTPGET, 1L)) != CURLE_OK ||
        (cc = curl_easy_setopt(c, CURLOPT_NOBODY, head ? 1L : 0L)) !=
            CURLE_OK ||
        (cc = curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST,
                               get || head ? NULL : req->method)) != CURLE_OK)
      goto setopt_failed;
  } else {
    /* POST semantics carry the body; other methods rename the request */
    if ((cc = curl_easy_setopt(c, CURLOPT_POST, 1L)) != CURLE_OK ||
        (cc = curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE,
                               (curl_off_t)(req->body ? req->body_len : 0))) !=
            CURLE_OK ||
        (cc = curl_easy_setopt(c, CURLOPT_POSTFIELDS,
                               req->body ? req->body : "")) != CURLE_OK ||
        (cc = curl_easy_setopt(
             c, CURLOPT_CUSTOMREQUEST,
             post ? NULL : req->method)) !=
            CURLE_OK)
      goto setopt_failed;
  }

  CURLMcode mc;
  cc = perform(h, &mc);
  long connects = 0;
  if (cc != CURLE_FAILED_INIT &&
      curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &connects) == CURLE_OK)
    h->connects += connects;
  if (cc != CURLE_OK) {
    if (mc != CURLM_OK)
      snprintf(resp->error, sizeof resp->error, "libcurl: %s",
               curl_multi_strerror(mc));
    else if (h->body.overflow)
      snprintf(resp->error, sizeof resp->error,
               "response body larger than %zu bytes", h->body.max - 1);
    else if (cc == CURLE_ABORTED_BY_CALLBACK)
      snprintf(resp->error, sizeof resp->error, "request cancelled");
    else
      snprintf(resp->error, sizeof resp->error, "%s", curl_easy_strerror(cc));
    goto cleanup;
  }
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &resp->status);
  resp->body = h->body.data ? h->body.data : "";
  resp->body_len = h->body.len;
  resp->headers = h->headers.data ? h->headers.data : "";
  resp->headers_len = h->headers.len;
  rc = 0;
  goto cleanup;

nomem:
  snprintf(resp->error, sizeof resp->error, "out of memory");
  goto cleanup;
setopt_failed:
  snprintf(resp->error, sizeof resp->error, "libcurl: %s",
           curl_easy_strerror(cc));
cleanup:
  /* the handle must not keep a pointer to a list that is freed */
  if (list) curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
  curl_slist_free_all(list);
  return rc;
}
