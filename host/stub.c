/* stub.c - a scripted HTTP server for specs of packs that call services.
 *
 * `flyte-host stub [--port N] [ROUTES_JSON]` (flyte.testing's http_stub):
 * answers the routes it is given, "METHOD /path" -> { status, headers,
 * body, delay }, and any other request with 200 and the request itself as
 * JSON. It records every request (but those to /_stub/) for a spec to
 * read: GET /_stub/requests lists them, oldest first, as { method, path,
 * query, headers, body } (header names lower-cased); DELETE clears them.
 * POST /_stub/routes adds or replaces routes while it runs. On 127.0.0.1
 * only; libmicrohttpd, a thread per connection.
 */
#include "stub.h"

#include "log.h"

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#define MAX_BODY (8u << 20)
#define MAX_DELAY 30.0

struct flyte_stub {
  struct MHD_Daemon *daemon;
  pthread_mutex_t mu;
  json_t *routes;   /* "METHOD /path" -> answer */
  json_t *requests; /* what arrived, oldest first */
  int port;
  pthread_cond_t wake; /* ends delays when the stub stops */
  int stopping;
};

/* A request: its target as sent (path and query, not decoded) and body. */
typedef struct {
  char *target;
  char *data;
  size_t len;
  int too_big;
  int started;
} body_buf;

/* libmicrohttpd's URI log callback: the first thing seen of a request,
 * with its target as sent; what it returns is the request's con_cls. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *c) {
  (void)cls, (void)c;
  body_buf *b = calloc(1, sizeof *b);
  if (b && (b->target = strdup(uri ? uri : "")) == NULL) {
    free(b);
    b = NULL;
  }
  return b;
}

static enum MHD_Result add_header(void *cls, enum MHD_ValueKind kind,
                                  const char *key, const char *value) {
  (void)kind;
  char name[256];
  size_t i = 0;
  for (; key[i] && i < sizeof name - 1; i++)
    name[i] = (char)(key[i] >= 'A' && key[i] <= 'Z' ? key[i] + 32 : key[i]);
  name[i] = '\0';
  json_object_set_new(cls, name, json_string(value ? value : ""));
  return MHD_YES;
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status,
                             char *body, json_t *headers,
                             const char *type) {
  struct MHD_Response *r = MHD_create_response_from_buffer(
      strlen(body), body, MHD_RESPMEM_MUST_FREE);
  if (r == NULL) {
    free(body);
    return MHD_NO;
  }
  const char *k;
  json_t *v;
  int typed = 0;
  json_object_foreach(headers, k, v) {
    if (!json_is_string(v)) continue;
    MHD_add_response_header(r, k, json_string_value(v));
    if (strcasecmp(k, "Content-Type") == 0) typed = 1;
  }
  if (!typed && type) MHD_add_response_header(r, "Content-Type", type);
  enum MHD_Result ret = MHD_queue_response(c, status, r);
  MHD_destroy_response(r);
  return ret;
}

static enum MHD_Result reply_json(struct MHD_Connection *c, unsigned status,
                                  json_t *value) {
  char *text = value ? json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY)
                     : NULL;
  json_decref(value);
  if (text == NULL) text = strdup("{\"error\":\"out of memory\"}");
  return text ? reply(c, status, text, NULL, "application/json") : MHD_NO;
}

/* Base64 of n bytes (for a body that is not UTF-8); caller frees. */
static char *base64(const unsigned char *p, size_t n) {
  static const char abc[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  char *out = malloc((n + 2) / 3 * 4 + 1), *o = out;
  if (out == NULL) return NULL;
  for (size_t i = 0; i < n; i += 3) {
    unsigned v = (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0)
                 | (i + 2 < n ? p[i + 2] : 0);
    *o++ = abc[v >> 18 & 63];
    *o++ = abc[v >> 12 & 63];
    *o++ = i + 1 < n ? abc[v >> 6 & 63] : '=';
    *o++ = i + 2 < n ? abc[v & 63] : '=';
  }
  *o = '\0';
  return out;
}

/* A JSON string of text, or with bytes that are not UTF-8, null. */
static json_t *text_or_null(const char *s, size_t n) {
  json_t *j = json_stringn(s, n);
  return j ? j : json_null();
}

/* Holds the connection's thread for a route's delay, or until the stub
 * stops (so that stopping never waits out a delay). */
static void delay(flyte_stub *s, double seconds) {
  if (seconds <= 0) return;
  if (seconds > MAX_DELAY) seconds = MAX_DELAY;
  struct timespec until;
  flyte_deadline_in(seconds, &until);
  pthread_mutex_lock(&s->mu);
  while (!s->stopping && pthread_cond_timedwait(&s->wake, &s->mu, &until) == 0)
    continue;
  pthread_mutex_unlock(&s->mu);
}

/* Checks routes: an object of "METHOD /path" -> an object. NULL or why. */
static const char *check_routes(const json_t *routes) {
  const char *k;
  json_t *v;
  if (!json_is_object(routes))
    return "routes must be a JSON object of \"METHOD /path\" -> answer";
  json_object_foreach((json_t *)routes, k, v) {
    const char *space = strchr(k, ' ');
    if (space == NULL || space == k || space[1] != '/')
      return "a route must be \"METHOD /path\"";
    if (!json_is_object(v))
      return "a route's answer must be an object { status, headers, body, "
             "delay }";
    json_t *st = json_object_get(v, "status"), *h = json_object_get(v,
                                                                   "headers");
    json_t *d = json_object_get(v, "delay");
    if (st && (!json_is_integer(st) || json_integer_value(st) < 200 ||
               json_integer_value(st) > 599))
      return "a route's status must be a whole number from 200 to 599";
    if (h && !json_is_object(h)) return "a route's headers must be an object";
    if (d && (!json_is_number(d) || json_number_value(d) < 0))
      return "a route's delay must be a number of seconds";
  }
  return NULL;
}

static enum MHD_Result answer(void *cls, struct MHD_Connection *c,
                              const char *url, const char *method,
                              const char *version, const char *upload,
                              size_t *upload_size, void **con_cls) {
  flyte_stub *s = cls;
  (void)version;
  body_buf *b = *con_cls;
  if (b == NULL) return MHD_NO; /* out of memory in on_uri */
  if (!b->started) { /* headers only */
    b->started = 1;
    return MHD_YES;
  }
  if (*upload_size) {
    if (!b->too_big && *upload_size <= MAX_BODY - b->len) {
      char *grown = realloc(b->data, b->len + *upload_size + 1);
      if (grown) {
        memcpy(grown + b->len, upload, *upload_size);
        b->data = grown;
        b->len += *upload_size;
        b->data[b->len] = '\0';
      } else {
        b->too_big = 1;
      }
    } else {
      b->too_big = 1;
    }
    *upload_size = 0;
    return MHD_YES;
  }
  if (b->too_big)
    return reply_json(c, 413, json_pack("{s:s}", "error", "body too large"));
  const char *body = b->data ? b->data : "";

  /* the path and query as sent */
  char *target = b->target, *q = strchr(target, '?');
  size_t path_len = q ? (size_t)(q - target) : strlen(target);
  (void)url;
  char path[1024];
  snprintf(path, sizeof path, "%.*s", (int)path_len, target);
  if (strcmp(path, "/_stub/requests") == 0) {
    pthread_mutex_lock(&s->mu);
    json_t *out = NULL;
    if (strcmp(method, "GET") == 0) {
      out = json_deep_copy(s->requests);
    } else if (strcmp(method, "DELETE") == 0) {
      json_array_clear(s->requests);
    }
    pthread_mutex_unlock(&s->mu);
    if (strcmp(method, "GET") == 0) return reply_json(c, 200, out);
    if (strcmp(method, "DELETE") == 0) return reply_json(c, 204, NULL);
    return reply_json(c, 405,
                      json_pack("{s:s}", "error", "GET or DELETE"));
  }
  if (strcmp(path, "/_stub/routes") == 0) {
    json_error_t je;
    json_t *more = json_loadb(body, b->len, 0, &je);
    const char *bad = strcmp(method, "POST") != 0 ? "POST routes here"
                      : more == NULL              ? "the body is not JSON"
                                                  : check_routes(more);
    if (bad) {
      json_decref(more);
      return reply_json(c, 400, json_pack("{s:s}", "error", bad));
    }
    pthread_mutex_lock(&s->mu);
    json_object_update(s->routes, more);
    pthread_mutex_unlock(&s->mu);
    json_decref(more);
    return reply_json(c, 204, NULL);
  }

  json_t *headers = json_object();
  MHD_get_connection_values(c, MHD_HEADER_KIND, add_header, headers);
  /* a body that is not UTF-8 is kept as body_base64 (body: null) */
  json_t *utf8 = json_stringn(body, b->len);
  char *b64 = utf8 ? NULL : base64((const unsigned char *)body, b->len);
  json_t *req = json_pack("{s:s, s:o, s:o, s:o, s:o, s:s?}", "method", method,
                          "path", text_or_null(path, strlen(path)), "query",
                          text_or_null(q ? q + 1 : "", q ? strlen(q + 1) : 0),
                          "headers", headers, "body",
                          utf8 ? utf8 : json_null(), "body_base64", b64);
  free(b64);
  char key[1100];
  snprintf(key, sizeof key, "%s %s", method, path);
  pthread_mutex_lock(&s->mu);
  if (req) json_array_append(s->requests, req);
  json_t *route = json_deep_copy(json_object_get(s->routes, key));
  pthread_mutex_unlock(&s->mu);
  if (route == NULL) return reply_json(c, 200, req);
  json_decref(req);
  delay(s, json_number_value(json_object_get(route, "delay")));
  json_t *st = json_object_get(route, "status"), *rb = json_object_get(route,
                                                                       "body");
  unsigned status = st ? (unsigned)json_integer_value(st) : 200;
  char *text = json_is_string(rb) ? strdup(json_string_value(rb))
               : rb ? json_dumps(rb, JSON_COMPACT | JSON_ENCODE_ANY)
                    : strdup("");
  enum MHD_Result ret =
      text ? reply(c, status, text, json_object_get(route, "headers"),
                   json_is_string(rb) || rb == NULL ? NULL
                                                    : "application/json")
           : MHD_NO;
  json_decref(route);
  return ret;
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls,
                      enum MHD_RequestTerminationCode code) {
  (void)cls, (void)c, (void)code;
  body_buf *b = *con_cls;
  if (b) {
    free(b->target);
    free(b->data);
    free(b);
  }
  *con_cls = NULL;
}

flyte_stub *flyte_stub_start(int port, const char *routes_json, char *err,
                             size_t errlen) {
  json_error_t je;
  json_t *routes = json_loads(routes_json ? routes_json : "{}", 0, &je);
  const char *bad = routes == NULL ? "ROUTES_JSON is not JSON"
                                   : check_routes(routes);
  if (bad) {
    snprintf(err, errlen, "%s", bad);
    json_decref(routes);
    return NULL;
  }
  flyte_stub *s = calloc(1, sizeof *s);
  if (s == NULL || (s->requests = json_array()) == NULL) {
    free(s);
    json_decref(routes);
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  s->routes = routes;
  pthread_mutex_init(&s->mu, NULL);
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  pthread_cond_init(&s->wake, &attr);
  pthread_condattr_destroy(&attr);
  struct sockaddr_in addr;
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_port = htons((uint16_t)port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  s->daemon = MHD_start_daemon(
      MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
          MHD_USE_POLL,
      (uint16_t)port, NULL, NULL, answer, s, MHD_OPTION_SOCK_ADDR, &addr,
      MHD_OPTION_NOTIFY_COMPLETED, completed, NULL,
      MHD_OPTION_URI_LOG_CALLBACK, on_uri, NULL,
      MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30, MHD_OPTION_END);
  if (s->daemon == NULL) {
    snprintf(err, errlen, "cannot listen on 127.0.0.1:%d", port);
    flyte_stub_stop(s);
    return NULL;
  }
  const union MHD_DaemonInfo *info =
      MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
  s->port = info ? info->port : port;
  return s;
}

int flyte_stub_port(const flyte_stub *s) { return s->port; }

void flyte_stub_stop(flyte_stub *s) {
  if (s == NULL) return;
  pthread_mutex_lock(&s->mu);
  s->stopping = 1;
  pthread_cond_broadcast(&s->wake);
  pthread_mutex_unlock(&s->mu);
  if (s->daemon) MHD_stop_daemon(s->daemon);
  json_decref(s->routes);
  json_decref(s->requests);
  pthread_cond_destroy(&s->wake);
  pthread_mutex_destroy(&s->mu);
  free(s);
}
