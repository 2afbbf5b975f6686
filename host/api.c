/* api.c - the flyte-api as a pack sees it.
 *
 * Each call is one request; retrying, backing off and logging are the
 * caller's. Every response is parsed strictly and a missing link is an error
 * that names the link.
 */
#include "api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

/* One request to the API; `endpoint` names it for the observer (metrics),
 * `what` for messages. */
static int request(flyte_http *h, const char *method, const char *url,
                   const char *body, size_t len, flyte_http_resp *resp,
                   const char *endpoint, const char *what, char *err,
                   size_t errlen) {
  flyte_http_req req = {method, url, body, len, NULL, 0, 1, 0};
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

int flyte_api_discover(flyte_http *h, const char *api, flyte_api_root *out,
                       char *err, size_t errlen) {
  flyte_http_resp r;
  char url[2048];
  memset(out, 0, sizeof *out);
  snprintf(url, sizeof url, "%s/v1", api);
  if (request(h, "GET", url, NULL, 0, &r, "discovery", "discovery", err,
              errlen))
    return -1;
  if (r.status != 200) {
    status_error(r.status, r.body, r.body_len, "discovery", err, errlen);
    return r.status == 401 || r.status == 403 ? FLYTE_API_DENIED : -1;
  }
  return flyte_api_parse_discovery(url, r.body, r.body_len, out, err, errlen);
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

/* Finds, in text that is not valid JSON, the first string value of `key`
 * whose text ends with `suffix` (or any, when suffix is NULL). Returns a
 * copy (caller frees) or NULL. Handles the escapes a URL or a name may
 * carry; a best effort to complete an action whose take reply jansson
 * cannot read. */
static char *scan_string(const char *body, size_t len, const char *key,
                         const char *suffix) {
  char quoted[64];
  int qn = snprintf(quoted, sizeof quoted, "\"%s\"", key);
  const char *end = body + len;
  for (const char *p = body; p + qn <= end; p++) {
    if (memcmp(p, quoted, (size_t)qn) != 0) continue;
    const char *q = p + qn;
    while (q < end && (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r'))
      q++;
    if (q >= end || *q++ != ':') continue;
    while (q < end && (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r'))
      q++;
    if (q >= end || *q++ != '"') continue;
    char *out = malloc((size_t)(end - q) + 1);
    if (out == NULL) return NULL;
    size_t n = 0;
    while (q < end && *q != '"') {
      if (*q == '\\' && q + 1 < end) q++; /* \/ \" \\ */
      out[n++] = *q++;
    }
    out[n] = '\0';
    size_t sl = suffix ? strlen(suffix) : 0;
    if (q < end && (!suffix || (n >= sl && strcmp(out + n - sl, suffix) == 0)))
      return out;
    free(out);
  }
  return NULL;
}

flyte_take_result flyte_api_parse_take(long status, const char *body,
                                       size_t len, flyte_action *out,
                                       char *err, size_t errlen) {
  json_t *j = NULL;
  flyte_take_result rc = FLYTE_TAKE_ERROR;
  memset(out, 0, sizeof *out);
  if (status == 204) {
    rc = FLYTE_TAKE_NONE;
    goto cleanup;
  }
  if (status == 404) {
    status_error(status, body, len, "take", err, errlen);
    rc = FLYTE_TAKE_UNKNOWN_PACK;
    goto cleanup;
  }
  if (status == 401 || status == 403) {
    status_error(status, body, len, "take", err, errlen);
    rc = FLYTE_TAKE_DENIED;
    goto cleanup;
  }
  if (status != 200) {
    status_error(status, body, len, "take", err, errlen);
    goto cleanup;
  }
  json_error_t je;
  j = json_loadb(body, len, JSON_ALLOW_NUL, &je);
  if (j == NULL && strstr(je.text, "too big integer")) {
    /* The input has an integer beyond 64 bits: read the action anyway so
     * that it can be completed (with a FATAL), never left PENDING. */
    j = json_loadb(body, len, JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, NULL);
    out->input_error = malloc(256);
    if (out->input_error)
      snprintf(out->input_error, 256,
               "an integer is outside the 64-bit range (%s)", je.text);
  }
  if (j == NULL) {
    /* A 200 means the server took the action for us. If its reply cannot
     * be read, find its result link anyway and complete it with a FATAL
     * rather than leave it PENDING forever. */
    out->result_url = scan_string(body, len, "href", "/result");
    if (out->result_url) {
      char *command = scan_string(body, len, "command", NULL);
      out->command = command ? command : strdup("?");
      out->id = action_id(out->result_url);
      free(out->input_error);
      out->input_error = malloc(300);
      if (out->input_error)
        snprintf(out->input_error, 300,
                 "the action's body is not JSON that can be read (%s)",
                 je.text);
      if (out->command && out->id && out->input_error) {
        rc = FLYTE_TAKE_ACTION;
        goto cleanup;
      }
      snprintf(err, errlen, "take: out of memory");
      flyte_action_free(out);
      goto cleanup;
    }
  }
  if (j == NULL || !json_is_object(j)) {
    json_decref(j);
    j = NULL;
    if ((j = parse_object(body, len, "take", err, errlen)) == NULL) {
      /* worth more than a warning: an action may be stranded */
      snprintf(err + strlen(err), errlen - strlen(err),
               " (the server may have handed out an action that cannot be "
               "completed now)");
      goto cleanup;
    }
  }
  const char *command = json_string_value(json_object_get(j, "command"));
  const char *result = flyte_api_find_link(json_object_get(j, "links"),
                                           "actionResult");
  if (result == NULL) {
    snprintf(err, errlen,
             "take: the action has no link with a rel ending in actionResult"
             " (it cannot be completed)");
    goto cleanup;
  }
  out->result_url = strdup(result);
  out->id = action_id(result);
  out->command = strdup(command ? command : "");
  if (out->input_error == NULL)
    out->input = json_incref(json_object_get(j, "input"));
  if (!out->result_url || !out->id || !out->command) {
    snprintf(err, errlen, "take: out of memory");
    flyte_action_free(out);
    goto cleanup;
  }
  rc = FLYTE_TAKE_ACTION;
cleanup:
  json_decref(j);
  if (rc != FLYTE_TAKE_ACTION) {
    free(out->input_error);
    out->input_error = NULL;
  }
  return rc;
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
  flyte_http_req req = {"GET", health_url, NULL, 0, NULL, 5000, 1, 0};
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
