/* api.c - the flyte-api as a pack sees it.
 *
 * Each call is one request; retrying, backing off and logging are the
 * caller's. Every response is parsed strictly and a missing link is an error
 * that names the link.
 */
#include "api.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jsonload.h"
#include "log.h"

const char *flyte_api_find_link(const json_t *links, const char *suffix) {
  size_t i, n = strlen(suffix);
  json_t *link;
  if (!json_is_array(links)) return NULL;
  json_array_foreach(links, i, link) {
    const char *rel = json_string_value(json_object_get(link, "rel"));
    const char *href = json_string_value(json_object_get(link, "href"));
    if (rel == NULL || href == NULL) continue;
    size_t len = strlen(rel);
    if (len >= n && strcmp(rel + len - n, suffix) == 0) return href;
  }
  return NULL;
}

/* Copies at most the first 200 bytes of a body for a message. */
static void excerpt(char *dst, size_t n, const char *body, size_t len) {
  size_t k = len < 200 ? len : 200;
  if (k >= n) k = n - 1;
  memcpy(dst, body, k);
  dst[k] = '\0';
  for (size_t i = 0; i < k; i++)
    if (dst[i] == '\n' || dst[i] == '\r') dst[i] = ' ';
}

/* Parses a JSON object body; NULL with a message when it is not one. */
static json_t *parse_object(const char *text, size_t len, const char *what,
                            char *err, size_t errlen) {
  json_error_t je;
  json_t *j = json_loadb(text, len, 0, &je);
  if (j == NULL || !json_is_object(j)) {
    char body[201];
    excerpt(body, sizeof body, text, len);
    snprintf(err, errlen, "%s: response is not a JSON object (%s): '%s'",
             what, j ? "another JSON value" : je.text, body);
    json_decref(j);
    return NULL;
  }
  return j;
}

static int status_error(long status, const char *text, size_t len,
                        const char *what, char *err, size_t errlen) {
  char body[201];
  excerpt(body, sizeof body, text, len);
  snprintf(err, errlen, "%s: HTTP %ld%s%s", what, status,
           body[0] ? ": " : "", body);
  return -1;
}

static flyte_api_observer observer;
static void *observer_ud;

void flyte_api_observe(flyte_api_observer fn, void *ud) {
  observer = fn;
  observer_ud = ud;
}

static double seconds_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- where the token goes ---------------------------------------------
 *
 * Every request api.c sends carries the token (http.h adds it), so each
 * goes only to an origin of the flyte-api: the root URL's (FLYTE_API), or
 * one its discovery document names in its links. The list is the
 * process's; discovery adds to it, nothing removes from it but a reset.
 * Static storage: nothing to free at exit.
 */

#define MAX_ORIGINS 32
#define ORIGIN_MAX 300

static pthread_mutex_t origins_mu = PTHREAD_MUTEX_INITIALIZER;
static char origins[MAX_ORIGINS][ORIGIN_MAX];
static size_t norigins;

static void lower(char *s) {
  for (; *s; s++)
    if (*s >= 'A' && *s <= 'Z') *s = (char)(*s - 'A' + 'a');
}

/* "scheme://host:port" of an http or https URL, lower-cased, the port
 * always given; parsed by libcurl, as the request itself will be (so that
 * "http://api@evil/" is evil's). Returns 0, or -1 when the URL cannot be
 * read or is not http(s). */
static int origin_of(const char *url, char *out, size_t n) {
  CURLU *u = url ? curl_url() : NULL;
  char *scheme = NULL, *host = NULL, *port = NULL, *zone = NULL;
  int rc = -1;
  if (u == NULL || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
      curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
      curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
      curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) !=
          CURLUE_OK)
    goto cleanup;
  if (curl_url_get(u, CURLUPART_ZONEID, &zone, 0) != CURLUE_OK) zone = NULL;
  lower(scheme);
  lower(host);
  if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0)
    goto cleanup;
  size_t hl = strlen(host);
  int k = zone && hl > 0 && host[hl - 1] == ']'
              ? snprintf(out, n, "%s://%.*s%%25%s]:%s", scheme, (int)(hl - 1),
                         host, zone, port)
              : snprintf(out, n, "%s://%s:%s", scheme, host, port);
  if (k > 0 && (size_t)k < n) rc = 0;
cleanup:
  curl_free(scheme);
  curl_free(host);
  curl_free(port);
  curl_free(zone);
  curl_url_cleanup(u);
  return rc;
}

int flyte_api_allow_url(const char *url) {
  char o[ORIGIN_MAX];
  int rc = 0;
  if (origin_of(url, o, sizeof o) != 0) return -1;
  pthread_mutex_lock(&origins_mu);
  size_t i = 0;
  while (i < norigins && strcmp(origins[i], o) != 0) i++;
  if (i == norigins) {
    if (norigins < MAX_ORIGINS)
      memcpy(origins[norigins++], o, sizeof o);
    else
      rc = -1;
  }
  pthread_mutex_unlock(&origins_mu);
  if (rc) flyte_warn("the flyte-api names more than %d origins: %s is not "
                     "one the token goes to",
                     MAX_ORIGINS, o);
  return rc;
}

void flyte_api_origins_reset(void) {
  pthread_mutex_lock(&origins_mu);
  norigins = 0;
  pthread_mutex_unlock(&origins_mu);
}

/* A URL as it may appear in a message: at most 200 bytes, control bytes
 * as '?' (the URL may come from a body written by anyone). */
static void printable(char *dst, size_t n, const char *url) {
  size_t k = 0;
  for (; url && url[k] && k < 200 && k + 1 < n; k++)
    dst[k] = (unsigned char)url[k] < 0x20 || url[k] == 0x7f ? '?' : url[k];
  dst[k] = '\0';
}

int flyte_api_url_allowed(const char *url, char *err, size_t errlen) {
  char o[ORIGIN_MAX], shown[201], list[512] = "";
  int known = origin_of(url, o, sizeof o) == 0;
  size_t used = 0;
  pthread_mutex_lock(&origins_mu);
  for (size_t i = 0; i < norigins; i++) {
    if (known && strcmp(origins[i], o) == 0) {
      pthread_mutex_unlock(&origins_mu);
      return 0;
    }
    if (used < sizeof list) {
      int k = snprintf(list + used, sizeof list - used, "%s%s",
                       i ? ", " : "", origins[i]);
      used += k > 0 ? (size_t)k : 0;
    }
  }
  pthread_mutex_unlock(&origins_mu);
  printable(shown, sizeof shown, url);
  if (!known)
    snprintf(err, errlen,
             "refused to send the token to '%s': not an http(s) URL with a "
             "host (the flyte-api's origins: %s)",
             shown, list[0] ? list : "none yet");
  else
    snprintf(err, errlen,
             "refused to send the token to %s (link %s): not an origin of "
             "the flyte-api (%s)",
             o, shown, list[0] ? list : "none yet: discovery has not run");
  return -1;
}

/* 0 when url may be sent the token; else -1, with the reason logged and in
 * err (after `what: `). */
static int check_url(const char *url, const char *what, char *err,
                     size_t errlen) {
  char why[1024];
  if (flyte_api_url_allowed(url, why, sizeof why) == 0) return 0;
  flyte_error("%s: %s", what, why);
  snprintf(err, errlen, "%s: %s", what, why);
  return -1;
}

/* One request to the API; `endpoint` names it for the observer (metrics),
 * `what` for messages. A URL outside the API's origins is not sent. */
static int request(flyte_http *h, const char *method, const char *url,
                   const char *body, size_t len, flyte_http_resp *resp,
                   const char *endpoint, const char *what, char *err,
                   size_t errlen) {
  flyte_http_req req = {.method = method, .url = url, .body = body,
                        .body_len = len, .json = 1};
  if (check_url(url, what, err, errlen)) return -1;
  double t0 = observer ? seconds_now() : 0;
  int rc = flyte_http_request(h, &req, resp);
  if (observer)
    observer(observer_ud, endpoint, rc == 0 ? resp->status : 0,
             seconds_now() - t0);
  if (rc != 0) {
    snprintf(err, errlen, "%s: %s", what, resp->error);
    return -1;
  }
  return 0;
}

static char *dup_link(const json_t *links, const char *suffix) {
  const char *href = flyte_api_find_link(links, suffix);
  return href ? strdup(href) : NULL;
}

int flyte_api_parse_discovery(const char *url, const char *body, size_t len,
                              flyte_api_root *out, char *err, size_t errlen) {
  json_t *j = NULL;
  int rc = -1;
  memset(out, 0, sizeof *out);
  if ((j = parse_object(body, len, "discovery", err, errlen)) == NULL)
    goto cleanup;
  json_t *links = json_object_get(j, "links");
  out->packs_url = dup_link(links, "pack/listPacks");
  out->health_url = dup_link(links, "info/health");
  if (out->packs_url == NULL) {
    snprintf(err, errlen,
             "discovery: %s has no link with a rel ending in pack/listPacks",
             url);
    goto cleanup;
  }
  rc = 0;
cleanup:
  json_decref(j);
  if (rc) flyte_api_root_free(out);
  return rc;
}

/* Adds the origin of every link in a discovery document to the list. */
static void allow_links(const char *body, size_t len) {
  json_t *j = json_loadb(body, len, 0, NULL), *link;
  size_t i;
  json_array_foreach(json_object_get(j, "links"), i, link) {
    const char *href = json_string_value(json_object_get(link, "href"));
    if (href) flyte_api_allow_url(href);
  }
  json_decref(j);
}

int flyte_api_discover(flyte_http *h, const char *api, flyte_api_root *out,
                       char *err, size_t errlen) {
  flyte_http_resp r;
  char url[2048];
  memset(out, 0, sizeof *out);
  snprintf(url, sizeof url, "%s/v1", api);
  /* the root's origin is the API's; a URL that has none is refused below */
  flyte_api_allow_url(url);
  if (request(h, "GET", url, NULL, 0, &r, "discovery", "discovery", err,
              errlen))
    return -1;
  if (r.status != 200) {
    status_error(r.status, r.body, r.body_len, "discovery", err, errlen);
    return r.status == 401 || r.status == 403 ? FLYTE_API_DENIED : -1;
  }
  int rc = flyte_api_parse_discovery(url, r.body, r.body_len, out, err,
                                     errlen);
  if (rc == 0) allow_links(r.body, r.body_len);
  return rc;
}

void flyte_api_root_free(flyte_api_root *r) {
  free(r->packs_url);
  free(r->health_url);
  memset(r, 0, sizeof *r);
}

int flyte_api_parse_registration(const char *body, size_t len,
                                 flyte_api_pack *out, char *err,
                                 size_t errlen) {
  json_t *j = NULL;
  int rc = -1;
  memset(out, 0, sizeof *out);
  if ((j = parse_object(body, len, "registration", err, errlen)) == NULL)
    goto cleanup;
  json_t *links = json_object_get(j, "links");
  const char *id = json_string_value(json_object_get(j, "id"));
  out->id = strdup(id ? id : "?");
  out->take_url = dup_link(links, "takeAction");
  out->event_url = dup_link(links, "event");
  if (out->take_url == NULL || out->event_url == NULL) {
    snprintf(err, errlen,
             "registration: the response has no link with a rel ending in "
             "%s",
             out->take_url ? "event" : "takeAction");
    goto cleanup;
  }
  rc = 0;
cleanup:
  json_decref(j);
  if (rc) flyte_api_pack_free(out);
  return rc;
}

int flyte_api_register(flyte_http *h, const char *packs_url, const char *body,
                       size_t len, flyte_api_pack *out, char *err,
                       size_t errlen) {
  flyte_http_resp r;
  memset(out, 0, sizeof *out);
  if (request(h, "POST", packs_url, body, len, &r, "register", "registration",
              err,
              errlen))
    return -1;
  if (r.status != 201) {
    status_error(r.status, r.body, r.body_len, "registration", err, errlen);
    return r.status == 401 || r.status == 403 ? FLYTE_API_DENIED : -1;
  }
  return flyte_api_parse_registration(r.body, r.body_len, out, err, errlen);
}

void flyte_api_pack_free(flyte_api_pack *p) {
  free(p->id);
  free(p->take_url);
  free(p->event_url);
  memset(p, 0, sizeof *p);
}

/* ".../actions/{id}/result" -> "{id}" */
static char *action_id(const char *url) {
  const char *end = strrchr(url, '/');
  if (end == NULL || end == url) return strdup("?");
  const char *start = end - 1;
  while (start > url && *start != '/') start--;
  if (*start == '/') start++;
  return strndup(start, (size_t)(end - start));
}

/* ---- the reply to a take ------------------------------------------------
 *
 * The reply is read as an envelope first: a walk over its top-level object
 * finds where each member's value lies, and jansson decodes only the keys
 * and the members that matter. An input that jansson cannot decode (1e400,
 * an integer beyond 64 bits, a NUL in a key) is then still inside a reply
 * whose result link can be read, and the action is completed with a FATAL.
 * Links come from the reply's own top-level `links` only: never from a
 * string found elsewhere in the body, such as inside the input, which
 * outsiders may write.
 */

/* Where one top-level member's value lies; count: how many times its key
 * appeared. */
typedef struct {
  const char *p;
  size_t n;
  int count;
} extent;

typedef struct {
  extent command, input, links;
} envelope;

static const char *skip_ws(const char *p, const char *end) {
  while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
    p++;
  return p;
}

/* p at an opening quote: just past the closing one, or NULL. An escape is
 * stepped over, not checked (jansson checks the strings that are used). */
static const char *skip_string(const char *p, const char *end) {
  p++;
  while (p < end) {
    if (*p == '"') return p + 1;
    p += *p == '\\' && end - p >= 2 ? 2 : 1;
  }
  return NULL;
}

static int ends_scalar(char c) {
  return c == ',' || c == ':' || c == '{' || c == '}' || c == '[' ||
         c == ']' || c == '"' || c == ' ' || c == '\t' || c == '\n' ||
         c == '\r';
}

/* p at the start of a value: just past its end, or NULL. Follows strings
 * and brackets (outside strings) to find the end; does not validate what
 * lies between. */
static const char *skip_value(const char *p, const char *end) {
  size_t depth = 0;
  do {
    if (p >= end) return NULL;
    if (*p == '"') {
      if ((p = skip_string(p, end)) == NULL) return NULL;
    } else if (*p == '{' || *p == '[') {
      depth++;
      p++;
    } else if (*p == '}' || *p == ']') {
      if (depth == 0) return NULL;
      depth--;
      p++;
    } else if (depth > 0) {
      p++;
    } else { /* a number, true, false or null: up to what ends it */
      const char *start = p;
      while (p < end && !ends_scalar(*p)) p++;
      if (p == start) return NULL;
    }
  } while (depth > 0);
  return p;
}

static int key_is(const json_t *key, const char *name) {
  size_t n = strlen(name);
  return json_string_length(key) == n &&
         memcmp(json_string_value(key), name, n) == 0;
}

/* Finds the members command, input and links of the JSON object in body.
 * Returns 0, or -1 with why when body is not an object of that shape. */
static int read_envelope(const char *body, size_t len, envelope *env,
                         char *why, size_t whylen) {
  const char *end = body + len, *p = skip_ws(body, end);
  memset(env, 0, sizeof *env);
  if (p >= end || *p != '{') {
    snprintf(why, whylen, "it does not start with '{'");
    return -1;
  }
  p = skip_ws(p + 1, end);
  if (p < end && *p == '}') { /* {} */
    if (skip_ws(p + 1, end) == end) return 0;
    snprintf(why, whylen, "text follows the object");
    return -1;
  }
  for (;;) {
    const char *key = p, *value;
    if (p >= end || *p != '"' || (p = skip_string(p, end)) == NULL) {
      snprintf(why, whylen, "a key is not a string");
      return -1;
    }
    size_t key_len = (size_t)(p - key);
    p = skip_ws(p, end);
    if (p >= end || *p != ':') {
      snprintf(why, whylen, "a key is not followed by ':'");
      return -1;
    }
    value = skip_ws(p + 1, end);
    if ((p = skip_value(value, end)) == NULL) {
      snprintf(why, whylen, "a member's value does not end");
      return -1;
    }
    json_error_t je;
    json_t *k = json_loadb(key, key_len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (!json_is_string(k)) {
      snprintf(why, whylen, "a key cannot be read: %.100s", je.text);
      json_decref(k);
      return -1;
    }
    extent *e = key_is(k, "command") ? &env->command
                : key_is(k, "input") ? &env->input
                : key_is(k, "links") ? &env->links
                                     : NULL;
    json_decref(k);
    if (e != NULL && e->count++ == 0) {
      e->p = value;
      e->n = (size_t)(p - value);
    }
    p = skip_ws(p, end);
    if (p < end && *p == ',') {
      p = skip_ws(p + 1, end);
      continue;
    }
    if (p < end && *p == '}') break;
    snprintf(why, whylen, "a member is not followed by ',' or '}'");
    return -1;
  }
  if (skip_ws(p + 1, end) != end) {
    snprintf(why, whylen, "text follows the object");
    return -1;
  }
  return 0;
}

/* Decodes one member's value; NULL with je set when jansson cannot. */
static json_t *decode_member(const extent *e, json_error_t *je) {
  return flyte_json_load(e->p, e->n, JSON_DECODE_ANY | JSON_ALLOW_NUL, je);
}

/* Why the input cannot be decoded, for the FATAL; caller frees. */
static char *input_error(const char *fmt, const char *reason) {
  size_t n = strlen(fmt) + strlen(reason) + 1;
  char *text = malloc(n);
  if (text) snprintf(text, n, fmt, reason);
  return text;
}

#define STRANDED                                                             \
  " (the server may have handed out an action that cannot be completed "   \
  "now)"

flyte_take_result flyte_api_parse_take(long status, const char *body,
                                       size_t len, flyte_action *out,
                                       char *err, size_t errlen) {
  json_t *links = NULL, *command = NULL;
  flyte_take_result rc = FLYTE_TAKE_ERROR;
  envelope env;
  json_error_t je;
  char why[160] = "";
  memset(out, 0, sizeof *out);
  if (status == 204) return FLYTE_TAKE_NONE;
  if (status == 404) {
    status_error(status, body, len, "take", err, errlen);
    return FLYTE_TAKE_UNKNOWN_PACK;
  }
  if (status == 401 || status == 403) {
    status_error(status, body, len, "take", err, errlen);
    return FLYTE_TAKE_DENIED;
  }
  if (status != 200) {
    status_error(status, body, len, "take", err, errlen);
    return FLYTE_TAKE_ERROR;
  }
  if (read_envelope(body, len, &env, why, sizeof why) != 0) {
    /* jansson's reason, when it has one, says more than the walk's */
    char text[201];
    json_t *j = json_loadb(body, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    excerpt(text, sizeof text, body, len);
    snprintf(err, errlen,
             "take: response is not a JSON object (%s): '%s'" STRANDED,
             j ? why : je.text, text);
    json_decref(j);
    return FLYTE_TAKE_ERROR;
  }
  if (env.links.count > 1) {
    snprintf(err, errlen, "take: the reply holds more than one 'links'; "
                          "none is followed" STRANDED);
    return FLYTE_TAKE_ERROR;
  }
  if (env.links.count == 1 &&
      (links = decode_member(&env.links, &je)) == NULL) {
    snprintf(err, errlen,
             "take: the reply's links cannot be read (%s)" STRANDED, je.text);
    return FLYTE_TAKE_ERROR;
  }
  const char *result = flyte_api_find_link(links, "actionResult");
  if (result == NULL) {
    snprintf(err, errlen,
             "take: the action has no link with a rel ending in actionResult"
             " (it cannot be completed)");
    goto cleanup;
  }
  if (env.command.count > 0) command = decode_member(&env.command, &je);
  out->result_url = strdup(result);
  out->id = action_id(result);
  out->command = strdup(json_is_string(command) ? json_string_value(command)
                                                : "");
  if (env.command.count > 1 || env.input.count > 1) {
    out->input_error = input_error(
        "the reply holds more than one '%s'",
        env.command.count > 1 ? "command" : "input");
  } else if (env.input.count == 1 &&
             (out->input = decode_member(&env.input, &je)) == NULL) {
    out->input_error =
        strstr(je.text, "too big integer")
            ? input_error("an integer is outside the 64-bit range (%s)",
                          je.text)
            : input_error("%s", je.text);
  }
  if (!out->result_url || !out->id || !out->command ||
      (!out->input && env.input.count > 0 && !out->input_error)) {
    snprintf(err, errlen, "take: out of memory" STRANDED);
    flyte_action_free(out);
    goto cleanup;
  }
  rc = FLYTE_TAKE_ACTION;
cleanup:
  json_decref(links);
  json_decref(command);
  return rc;
}

/* ---- a take reply too large to keep --------------------------------------
 *
 * Read as it streams: a walk that follows strings and brackets keeps the
 * values of the top-level "command" and "links" members (a few KiB at
 * most) and nothing else, so the action's result link is found wherever
 * it lies in the reply, and the action can be completed with a FATAL.
 */

#define SCAN_KEY 16          /* a top-level key longer than this is none of ours */
#define SCAN_VALUE (64 << 10) /* the most kept of "links" or "command" */

struct flyte_take_scan {
  size_t depth;
  int in_string, escape;
  int expect_key; /* at depth 1, after '{' or ',' */
  int in_key, in_value;
  char key[SCAN_KEY + 1];
  size_t key_len;
  char *value;   /* the member being kept, or NULL */
  size_t *value_len;
  int *value_count;
  char links[SCAN_VALUE], command[1024];
  size_t links_len, command_len;
  int links_count, command_count, broken;
  int command_long; /* the command did not fit: a stand-in name is used */
};

/* The command name of an action whose name did not fit (1 KiB or more):
 * its result link is still followed, and it ends FATAL. */
#define LONG_COMMAND "\"(a command name of 1 KiB or more)\""

flyte_take_scan *flyte_take_scan_new(void) {
  flyte_take_scan *t = calloc(1, sizeof *t);
  return t;
}

void flyte_take_scan_free(flyte_take_scan *t) { free(t); }

static void scan_keep(flyte_take_scan *t, char c) {
  size_t cap = t->value == t->links ? sizeof t->links : sizeof t->command;
  if (*t->value_len < cap - 1)
    t->value[(*t->value_len)++] = c;
  else if (t->value == t->command)
    t->command_long = 1; /* the rest of the name is not kept */
  else
    t->broken = 1; /* too long to be a link list: then none is followed */
}

/* The value of a top-level member ends (at ',' or the closing '}'). */
static void scan_value_end(flyte_take_scan *t) {
  if (t->value) t->value[*t->value_len] = '\0';
  t->value = NULL;
  t->in_value = 0;
}

void flyte_take_scan_feed(void *ud, const char *p, size_t n) {
  flyte_take_scan *t = ud;
  for (size_t i = 0; i < n; i++) {
    char c = p[i];
    if (t->in_string) {
      if (t->in_key && !t->escape && c != '"') {
        if (t->key_len < SCAN_KEY)
          t->key[t->key_len++] = c;
        else
          t->key_len = SCAN_KEY + 1; /* none of ours */
      }
      if (t->value) scan_keep(t, c);
      if (t->escape)
        t->escape = 0;
      else if (c == '\\')
        t->escape = 1, t->key_len = t->in_key ? SCAN_KEY + 1 : t->key_len;
      else if (c == '"') {
        t->in_string = 0;
        t->in_key = 0;
      }
      continue;
    }
    if (c == '"') {
      t->in_string = 1;
      if (t->depth == 1 && t->expect_key) {
        t->in_key = 1;
        t->expect_key = 0;
        t->key_len = 0;
      } else if (t->value) {
        scan_keep(t, c);
      }
      continue;
    }
    if (t->depth == 1 && !t->in_value && c == ':') {
      t->in_value = 1;
      t->key[t->key_len <= SCAN_KEY ? t->key_len : 0] = '\0';
      if (strcmp(t->key, "links") == 0 && t->links_count++ == 0) {
        t->value = t->links;
        t->value_len = &t->links_len;
      } else if (strcmp(t->key, "command") == 0 && t->command_count++ == 0) {
        t->value = t->command;
        t->value_len = &t->command_len;
      }
      continue;
    }
    if (c == '{' || c == '[') {
      if (t->depth++ == 0 && c == '{') t->expect_key = 1;
      if (t->value) scan_keep(t, c);
      continue;
    }
    if (c == '}' || c == ']') {
      if (t->depth == 0) {
        t->broken = 1;
        continue;
      }
      if (--t->depth == 0) {
        scan_value_end(t);
        continue;
      }
      if (t->value) scan_keep(t, c);
      continue;
    }
    if (t->depth == 1 && c == ',') {
      scan_value_end(t);
      t->expect_key = 1;
      continue;
    }
    if (t->value) scan_keep(t, c);
  }
}

flyte_take_result flyte_take_scan_finish(flyte_take_scan *t, long status,
                                         size_t size, size_t limit,
                                         flyte_action *out, char *err,
                                         size_t errlen) {
  memset(out, 0, sizeof *out);
  if (status != 200) {
    snprintf(err, errlen, "take: HTTP %ld with a body of %zu bytes", status,
             size);
    return status == 404 ? FLYTE_TAKE_UNKNOWN_PACK
           : status == 401 || status == 403 ? FLYTE_TAKE_DENIED
                                            : FLYTE_TAKE_ERROR;
  }
  if (t->broken || t->depth != 0 || t->in_string || t->links_count != 1) {
    snprintf(err, errlen,
             "take: a reply of %zu bytes, over the host's limit of %zu "
             "bytes, has no readable top-level links" STRANDED, size, limit);
    return FLYTE_TAKE_ERROR;
  }
  /* the envelope alone, read as any reply is */
  const char *command = t->command_long ? LONG_COMMAND : t->command;
  size_t cap = t->links_len + strlen(command) + 64;
  char *env = malloc(cap);
  if (env == NULL) {
    snprintf(err, errlen, "take: out of memory" STRANDED);
    return FLYTE_TAKE_ERROR;
  }
  int len = snprintf(env, cap, "{\"links\":%s%s%s}", t->links,
                     t->command_count == 1 ? ",\"command\":" : "",
                     t->command_count == 1 ? command : "");
  flyte_take_result rc =
      flyte_api_parse_take(200, env, (size_t)len, out, err, errlen);
  free(env);
  if (rc != FLYTE_TAKE_ACTION) return rc;
  json_decref(out->input);
  out->input = NULL;
  free(out->input_error);
  char why[200];
  snprintf(why, sizeof why,
           "the take reply is %zu bytes, over the host's limit of %zu bytes "
           "on a reply; the input was not read",
           size, limit);
  out->input_error = strdup(why);
  if (out->input_error == NULL) {
    flyte_action_free(out);
    snprintf(err, errlen, "take: out of memory" STRANDED);
    return FLYTE_TAKE_ERROR;
  }
  return FLYTE_TAKE_ACTION;
}

flyte_take_result flyte_api_take(flyte_http *h, const char *take_url,
                                 flyte_action *out, char *err, size_t errlen) {
  flyte_http_resp r;
  memset(out, 0, sizeof *out);
  if (request(h, "POST", take_url, NULL, 0, &r, "take", "take", err, errlen))
    return FLYTE_TAKE_ERROR;
  return flyte_api_parse_take(r.status, r.body, r.body_len, out, err, errlen);
}

void flyte_action_free(flyte_action *a) {
  free(a->command);
  json_decref(a->input);
  free(a->input_error);
  free(a->result_url);
  free(a->id);
  memset(a, 0, sizeof *a);
}

long flyte_api_post(flyte_http *h, const char *endpoint, const char *url,
                    const char *body, size_t len, char *err, size_t errlen) {
  flyte_http_resp r;
  err[0] = '\0';
  if (request(h, "POST", url, body, len, &r, endpoint, "post", err, errlen)) return -1;
  if (r.status != 202)
    status_error(r.status, r.body, r.body_len, "post", err, errlen);
  return r.status;
}

int flyte_api_health(flyte_http *h, const char *health_url, char *status,
                     size_t n) {
  flyte_http_resp r;
  if (health_url == NULL) {
    snprintf(status, n, "flyte-api has no health link");
    return 0;
  }
  if (check_url(health_url, "health", status, n)) return 0;
  flyte_http_req req = {.method = "GET", .url = health_url,
                        .timeout_ms = 5000, .json = 1};
  double t0 = observer ? seconds_now() : 0;
  int rc = flyte_http_request(h, &req, &r);
  if (observer)
    observer(observer_ud, "health", rc == 0 ? r.status : 0,
             seconds_now() - t0);
  if (rc != 0) {
    snprintf(status, n, "flyte-api is unreachable: %s", r.error);
    return 0;
  }
  if (r.status != 200) {
    snprintf(status, n, "flyte-api is unhealthy: HTTP %ld", r.status);
    return 0;
  }
  snprintf(status, n, "flyte-api is up");
  return 1;
}

char *flyte_api_fatal_body(const char *text) {
  char when[40];
  flyte_time_rfc3339(when, sizeof when, 6);
  json_t *o = json_pack("{s:s, s:s, s:s}", "event", "FATAL", "payload", text,
                        "createdAt", when);
  char *body = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
  json_decref(o);
  return body;
}
