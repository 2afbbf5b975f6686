/* standin.c - a stand-in flyte-api, all state in memory.
 *
 * libmicrohttpd serves each connection on its own thread; one mutex guards
 * the packs, actions, events and counters. The API paths follow
 * flyte-api.md (and flyte-api's handlers); /dev/ paths queue actions,
 * show what arrived, and inject faults: a spec can make chosen API requests
 * fail, hang or come back garbled (POST /dev/faults). POST /dev/actions
 * takes an action's input as JSON (`input`) or as text sent verbatim in
 * the take reply (`input_text`: for inputs jansson cannot hold, 1e400).
 * GET / serves the dev page (host/devpage.html, built in), which reads
 * GET /dev/watch.
 */
#include "standin.h"

#include "devpage.h"
#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define MAX_BODY (8u << 20)
#define JSON_TYPE "application/json"
#define MAX_FAULT_DELAY 30.0 /* seconds a connection thread may be held */
#define WATCH_WAIT 20.0 /* seconds GET /dev/watch waits for a change */
#define WATCH_LIMIT 100 /* newest actions and events GET /dev/watch shows */

enum { ST_NEW, ST_PENDING, ST_DONE };
static const char *const STATE_NAME[] = {"NEW", "PENDING", "DONE"};

/* Request counters, named as /dev/state shows them. */
enum { C_DISCOVERY, C_REGISTER, C_TAKE, C_TAKE_ACTION, C_RESULT, C_EVENT,
       C_HEALTH, C_COUNT };
static const char *const COUNTER_NAME[] = {"discovery", "register", "take",
  "take_action", "result", "event", "health"};

/* API routes; the ones from R_TAKE on carry a pack id in the path. */
/* R_LIST: the other links of /v1 (the packs, flows, datastore, audit,
 * swagger), answered as lists for a client that follows them. */
typedef enum { R_NONE, R_DISCOVERY, R_HEALTH, R_REGISTER, R_LIST, R_TAKE,
               R_RESULT, R_EVENT } route_kind;
static const struct { const char *method; int counter; } ROUTE[] = {
  [R_NONE] = {"", -1}, [R_DISCOVERY] = {"GET", C_DISCOVERY},
  [R_HEALTH] = {"GET", C_HEALTH}, [R_REGISTER] = {"POST", C_REGISTER},
  [R_LIST] = {"GET", -1}, [R_TAKE] = {"POST", C_TAKE},
  [R_RESULT] = {"POST", C_RESULT}, [R_EVENT] = {"POST", C_EVENT}};
/* Route names as POST /dev/faults takes them. */
static const char *const ROUTE_NAME[] = {
  [R_NONE] = "", [R_DISCOVERY] = "discovery", [R_HEALTH] = "health",
  [R_REGISTER] = "register", [R_LIST] = "list", [R_TAKE] = "take",
  [R_RESULT] = "result", [R_EVENT] = "event"};

/* What a fault does to the reply's body (the status stays). */
typedef enum { G_NONE, G_TRUNCATED, G_INVALID, G_EMPTY } garble;
static const char *const GARBLE_NAME[] = {"", "truncated", "invalid",
                                          "empty"};

/* A fault asked for by a spec: the next `count` requests on `route` are
 * answered so instead of (or, with `after`, after) being handled. */
typedef struct {
  route_kind route;
  unsigned status; /* 0: the normal status */
  double delay;    /* seconds to wait before answering */
  garble body;
  int after;       /* handle the request first: its reply is what is lost */
  long count;
} fault_rec;

typedef struct {
  char *id;
  json_t *registration; /* the latest request body, as received */
  long registrations;
  struct timespec last_seen;
} pack_rec;

typedef struct {
  long id;
  char *pack, *command;
  json_t *input;  /* NULL: absent */
  char *input_text; /* NULL, or the input as text, sent verbatim: for specs
                     * of inputs jansson cannot hold (1e400) */
  int state;
  json_t *result; /* NULL until DONE */
  long results;   /* result posts that reached it, accepted or refused */
  double t_queued, t_taken, t_done; /* CLOCK_MONOTONIC seconds, 0: not yet */
  struct timespec at_queued, at_taken, at_done; /* the same, wall clock */
} action_rec;

typedef struct {
  char *pack;
  json_t *body;
} event_rec;

struct flyte_standin {
  struct MHD_Daemon *daemon;
  int port;
  char hostport[64]; /* for requests without a Host header */
  char *jwt;
  flyte_standin_notify notify;
  void *notify_ud;
  /* The lock guards everything below. The JSON kept here is owned by the
   * state alone: what leaves the lock is a deep copy, so no refcount is
   * shared between threads. */
  pthread_mutex_t lock;
  pack_rec *packs;
  size_t npacks, packs_cap;
  long last_pack; /* index of the pack registered last, or -1 */
  action_rec *actions;
  size_t nactions, actions_cap;
  long next_action;
  size_t first_new; /* no action before this index is NEW */
  long by_state[3]; /* actions in each state: /dev/stats without a scan */
  event_rec *events;
  size_t nevents, events_cap;
  long counts[C_COUNT];
  long connections;
  long slow_now, slow_peak; /* /dev/slow requests waiting, and the most */
  char *authorization;
  json_t *code; /* flyte_standin_set_code's, or NULL */
  fault_rec *faults; /* in the order asked for */
  size_t nfaults, faults_cap;
  long faults_served;
  long revision; /* bumped by every change /dev/watch shows; never reset */
  pthread_cond_t wake; /* ends fault delays when the stand-in stops */
  pthread_cond_t changed; /* broadcast with each new revision, and on stop */
  int stopping;
};

/* One request's body, accumulated across calls (MHD's req_cls). */
typedef struct {
  char *data;
  size_t len, cap;
  int too_big, replied;
} body_buf;

/* What a handler sees of the request. */
typedef struct {
  struct MHD_Connection *conn;
  const char *base; /* "http://" + Host */
  const char *url; /* the path */
  const char *body;
  size_t len;
  char *pack; /* pack id from the path (owned), or NULL */
  long action; /* action id from the path, or 0 */
} request;

/* What a handler answers; finish() sends it and frees it. */
typedef struct {
  unsigned status;
  json_t *body;          /* NULL: empty body */
  char *location;        /* Location header, or NULL */
  const char *allow;     /* Allow header (405), or NULL */
  const char *note_kind; /* for the notify callback, or NULL */
  char *note_pack;
  json_t *note_body;
  garble garble;         /* an injected fault spoils the body so */
  char *input_text;      /* sent verbatim as the body's first member,
                          * "input" (an action's input_text), or NULL */
} reply;

static void fail(reply *out, unsigned status, const char *msg) {
  json_decref(out->body);
  out->status = status;
  out->body = json_pack("{s:s}", "error", msg);
}

/* Concatenates NUL-terminated strings; caller frees; NULL when out of
 * memory. Use through CAT(). */
static char *str_cat(const char *first, ...) {
  va_list ap;
  const char *p;
  size_t n = 0;
  char *out, *w;
  va_start(ap, first);
  for (p = first; p != NULL; p = va_arg(ap, const char *)) n += strlen(p);
  va_end(ap);
  if ((out = w = malloc(n + 1)) == NULL) return NULL;
  va_start(ap, first);
  for (p = first; p != NULL; p = va_arg(ap, const char *)) w = stpcpy(w, p);
  va_end(ap);
  return out;
}
#define CAT(...) str_cat(__VA_ARGS__, (const char *)NULL)

/* Percent-encodes all but unreserved characters, for a path segment or a
 * query value; caller frees. */
static char *escape(const char *s) {
  static const char HEX[] = "0123456789ABCDEF";
  char *out = malloc(strlen(s) * 3 + 1), *w = out;
  if (out == NULL) return NULL;
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
        (c >= '0' && c <= '9') || strchr("-._~", c) != NULL) {
      *w++ = (char)c;
    } else {
      *w++ = '%';
      *w++ = HEX[c >> 4];
      *w++ = HEX[c & 15];
    }
  }
  *w = '\0';
  return out;
}

/* Makes room for one more element; returns the (moved) array, or NULL when
 * out of memory (the old one is kept). */
static void *grow(void *arr, size_t *cap, size_t n, size_t size) {
  size_t ncap = *cap ? *cap * 2 : 16;
  void *p;
  if (n < *cap) return arr;
  if ((p = realloc(arr, ncap * size)) != NULL) *cap = ncap;
  return p;
}

static int ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

static void format_time(const struct timespec *t, char out[48]) {
  struct tm tm;
  size_t n;
  gmtime_r(&t->tv_sec, &tm);
  n = strftime(out, 48, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(out + n, 48 - n, ".%06ldZ", t->tv_nsec / 1000);
}

/* Reads n digits; 0 when one is not a digit (stops at the NUL). */
static int digits(const char *s, int n, int *value) {
  *value = 0;
  for (int i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return 0;
    *value = *value * 10 + (s[i] - '0');
  }
  return 1;
}

/* Whether s is an RFC 3339 date-time as Go's time.Time takes it from JSON:
 * YYYY-MM-DDTHH:MM:SS[.digits](Z|+HH:MM|-HH:MM), fields in range. */
static int is_rfc3339(const char *s) {
  static const int MDAYS[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  int y, mo, d, h, mi, sec, oh, om, leap;
  if (!digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) ||
      s[7] != '-' || !digits(s + 8, 2, &d) || s[10] != 'T' ||
      !digits(s + 11, 2, &h) || s[13] != ':' || !digits(s + 14, 2, &mi) ||
      s[16] != ':' || !digits(s + 17, 2, &sec))
    return 0;
  s += 19;
  if (*s == '.') {
    if (s[1] < '0' || s[1] > '9') return 0;
    for (s++; *s >= '0' && *s <= '9'; s++) continue;
  }
  if (*s == 'Z') {
    s++;
  } else if (*s == '+' || *s == '-') {
    if (!digits(s + 1, 2, &oh) || s[3] != ':' || !digits(s + 4, 2, &om) ||
        oh > 23 || om > 59)
      return 0;
    s += 6;
  } else {
    return 0;
  }
  if (*s != '\0' || mo < 1 || mo > 12 || d < 1) return 0;
  leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  return d <= MDAYS[mo - 1] + (mo == 2 && leap) && h <= 23 && mi <= 59 &&
         sec <= 59;
}

/* A result or event body: {"event": string, "createdAt": RFC 3339, ...}. */
static int is_event_body(json_t *body) {
  json_t *ev = json_object_get(body, "event");
  json_t *at = json_object_get(body, "createdAt");
  return json_is_object(body) && json_is_string(ev) && json_is_string(at) &&
         strlen(json_string_value(at)) == json_string_length(at) &&
         is_rfc3339(json_string_value(at));
}

/* Appends {"href": href, "rel": rel}; takes both (either may be NULL, which
 * fails). Returns 0 or -1. */
static int add_link(json_t *links, json_t *href, json_t *rel) {
  json_t *l = json_object();
  int rc = json_object_set_new(l, "href", href);
  rc |= json_object_set_new(l, "rel", rel);
  if (rc != 0) {
    json_decref(l);
    return -1;
  }
  return json_array_append_new(links, l);
}

/* flyte-api's pattern for rels a pack may not use. */
static int rel_collides(const char *rel) {
  return strstr(rel, "up") != NULL || strstr(rel, "self") != NULL ||
         ends_with(rel, "/actionResult") || ends_with(rel, "/takeAction") ||
         ends_with(rel, "/event");
}

static int is_set(json_t *v) { return v != NULL && !json_is_null(v); }

/* Checks a registration body; returns NULL or what is wrong. */
static const char *check_pack(json_t *p) {
  json_t *v, *e, *list;
  const char *key;
  size_t i, j;
  if (!json_is_object(p)) return "pack must be a JSON object";
  v = json_object_get(p, "name");
  if (!json_is_string(v) || json_string_length(v) == 0)
    return "pack.name must be a non-empty string";
  if (is_set(list = json_object_get(p, "labels"))) {
    if (!json_is_object(list)) return "pack.labels must be an object";
    json_object_foreach(list, key, v) {
      if (!json_is_string(v)) return "pack.labels values must be strings";
    }
  }
  list = json_object_get(p, "commands");
  if (is_set(list) && !json_is_array(list))
    return "pack.commands must be an array";
  json_array_foreach(list, i, v) {
    json_t *evs = json_object_get(v, "events");
    if (!json_is_string(json_object_get(v, "name")))
      return "pack.commands[].name must be a string";
    if (!json_is_array(evs)) return "pack.commands[].events must be an array";
    json_array_foreach(evs, j, e) {
      if (!json_is_string(e))
        return "pack.commands[].events must hold strings";
    }
  }
  list = json_object_get(p, "events");
  if (is_set(list) && !json_is_array(list))
    return "pack.events must be an array";
  json_array_foreach(list, i, v) {
    if (!json_is_string(json_object_get(v, "name")))
      return "pack.events[].name must be a string";
  }
  list = json_object_get(p, "links");
  if (is_set(list) && !json_is_array(list))
    return "pack.links must be an array";
  json_array_foreach(list, i, v) {
    json_t *rel = json_object_get(v, "rel");
    if (!json_is_string(json_object_get(v, "href")) || !json_is_string(rel))
      return "pack.links[] must have string href and rel";
    if (rel_collides(json_string_value(rel)))
      return "pack.links[].rel collides with flyte's own links";
  }
  return NULL;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* name, then ".key.value" for each label in key order; caller frees. */
static char *pack_id_of(json_t *p) {
  json_t *labels = json_object_get(p, "labels"), *v;
  const char *name = json_string_value(json_object_get(p, "name")), *key;
  const char **keys = NULL;
  size_t n = json_object_size(labels), i = 0, len = strlen(name);
  char *id = NULL, *w;
  if (n > 0 && (keys = malloc(n * sizeof *keys)) == NULL) goto cleanup;
  json_object_foreach(labels, key, v) {
    keys[i++] = key;
    len += 2 + strlen(key) + strlen(json_string_value(v));
  }
  if (n > 0) qsort(keys, n, sizeof *keys, cmp_str);
  if ((id = w = malloc(len + 1)) == NULL) goto cleanup;
  w = stpcpy(w, name);
  for (i = 0; i < n; i++) {
    *w++ = '.';
    w = stpcpy(w, keys[i]);
    *w++ = '.';
    w = stpcpy(w, json_string_value(json_object_get(labels, keys[i])));
  }
cleanup:
  free(keys);
  return id;
}

static pack_rec *find_pack(flyte_standin *s, const char *id) {
  for (size_t i = 0; i < s->npacks; i++) {
    if (strcmp(s->packs[i].id, id) == 0) return &s->packs[i];
  }
  return NULL;
}

/* Ids are handed out in order from 1 and actions are never removed (but
 * by a reset, which starts again at 1): action N is at index N - 1. */
static action_rec *find_action(flyte_standin *s, long id) {
  if (id < 1 || (size_t)id > s->nactions) return NULL;
  action_rec *a = &s->actions[id - 1];
  return a->id == id ? a : NULL;
}

/* The stored pack as flyte-api echoes it; NULL when out of memory. */
static json_t *pack_echo(const char *base, const pack_rec *p) {
  json_t *e = json_deep_copy(p->registration), *links, *cmd;
  char *eid = escape(p->id), when[48];
  size_t i;
  int rc = 0;
  if (e == NULL || eid == NULL) goto fail;
  format_time(&p->last_seen, when);
  rc |= json_object_set_new(e, "id", json_string(p->id));
  rc |= json_object_set_new(e, "lastSeen", json_string(when));
  rc |= json_object_set_new(e, "status", json_string("ok"));
  json_array_foreach(json_object_get(e, "commands"), i, cmd) {
    char *name = escape(json_string_value(json_object_get(cmd, "name")));
    json_t *cl = json_array();
    rc |= name == NULL || add_link(cl,
        json_sprintf("%s/v1/packs/%s/actions/take?commandName=%s", base, eid,
                     name),
        json_sprintf("%s/swagger#!/action/takeAction", base));
    rc |= json_object_set_new(cmd, "links", cl);
    free(name);
  }
  if (!json_is_array(json_object_get(e, "links")))
    rc |= json_object_set_new(e, "links", json_array());
  if (rc != 0) goto fail;
  links = json_object_get(e, "links");
  if (add_link(links, json_sprintf("%s/v1/packs/%s", base, eid),
               json_string("self")) ||
      add_link(links, json_sprintf("%s/v1/packs", base), json_string("up")) ||
      add_link(links, json_sprintf("%s/v1/packs/%s/actions/take", base, eid),
               json_sprintf("%s/swagger#!/action/takeAction", base)) ||
      add_link(links, json_sprintf("%s/v1/packs/%s/events", base, eid),
               json_sprintf("%s/swagger#/event", base)))
    goto fail;
  free(eid);
  return e;
fail:
  free(eid);
  json_decref(e);
  return NULL;
}

/* A copy of a stored value, JSON null for none; NULL when out of memory. */
static json_t *copy_or_null(json_t *v) {
  return v != NULL ? json_deep_copy(v) : json_null();
}

/* An action as /dev/ shows it; NULL when out of memory. "at": RFC 3339
 * times (null: not yet); "times": the same in CLOCK_MONOTONIC seconds (0:
 * not yet), for measuring against a clock of the same kind. */
static json_t *action_json(const action_rec *a) {
  char queued[48], taken[48], done[48];
  format_time(&a->at_queued, queued);
  format_time(&a->at_taken, taken);
  format_time(&a->at_done, done);
  return json_pack("{s:I, s:s, s:s, s:o, s:s*, s:s, s:o, s:I, "
                   "s:{s:s, s:s?, s:s?}, s:{s:f, s:f, s:f}}",
                   "id", (json_int_t)a->id,
                   "pack", a->pack, "command", a->command,
                   "input", copy_or_null(a->input),
                   "input_text", a->input_text,
                   "state", STATE_NAME[a->state],
                   "result", copy_or_null(a->result),
                   "results", (json_int_t)a->results,
                   "at", "queued", queued,
                   "taken", a->t_taken > 0 ? taken : NULL,
                   "done", a->t_done > 0 ? done : NULL,
                   "times", "queued", a->t_queued, "taken", a->t_taken,
                   "done", a->t_done);
}

static double monotonic(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Something /dev/watch shows has changed; call with the lock held. */
static void touch_locked(flyte_standin *s) {
  s->revision++;
  pthread_cond_broadcast(&s->changed);
}

/* Whether the pack's registration names the command; else writes the
 * refusal, naming the commands it has, to why. */
static int knows_command(const pack_rec *p, const char *command, char *why,
                         size_t n) {
  json_t *cmds = json_object_get(p->registration, "commands"), *c;
  size_t i, len;
  json_array_foreach(cmds, i, c) {
    const char *name = json_string_value(json_object_get(c, "name"));
    if (name && strcmp(name, command) == 0) return 1;
  }
  len = (size_t)snprintf(why, n, "command '%s' is unknown to pack %s (its "
                         "commands:", command, p->id);
  json_array_foreach(cmds, i, c) {
    const char *name = json_string_value(json_object_get(c, "name"));
    if (name && len < n)
      len += (size_t)snprintf(why + len, n - len, "%s %s", i ? "," : "",
                              name);
  }
  if (len < n) snprintf(why + len, n - len, "%s)",
                        json_array_size(cmds) ? "" : " none");
  return 0;
}

/* Queues an action; call with the lock held. input is borrowed and copied
 * (NULL: absent); pack_id NULL means the pack registered last. Returns the
 * action (valid until the lock is released), or NULL with *status, *msg. */
static action_rec *enqueue_locked(flyte_standin *s, const char *pack_id,
                                  const char *command, json_t *input,
                                  int any_command, unsigned *status,
                                  const char **msg) {
  static __thread char why[1024];
  pack_rec *p = pack_id != NULL ? find_pack(s, pack_id)
              : s->last_pack >= 0 ? &s->packs[s->last_pack] : NULL;
  action_rec *arr, *a;
  if (p == NULL) {
    *status = 404;
    *msg = pack_id != NULL ? "no such pack" : "no pack has registered yet";
    return NULL;
  }
  /* a flow asks a pack for its commands; any_command: a spec of what a
   * host does with another */
  if (!any_command && !knows_command(p, command, why, sizeof why)) {
    *status = 400;
    *msg = why;
    return NULL;
  }
  arr = grow(s->actions, &s->actions_cap, s->nactions, sizeof *arr);
  if (arr == NULL) goto oom;
  s->actions = arr;
  a = &arr[s->nactions];
  memset(a, 0, sizeof *a);
  a->pack = strdup(p->id);
  a->command = strdup(command);
  a->input = input != NULL ? json_deep_copy(input) : NULL;
  if (a->pack == NULL || a->command == NULL || (input && a->input == NULL)) {
    free(a->pack);
    free(a->command);
    json_decref(a->input);
    goto oom;
  }
  a->id = s->next_action++;
  a->state = ST_NEW;
  s->by_state[ST_NEW]++;
  a->t_queued = monotonic();
  clock_gettime(CLOCK_REALTIME, &a->at_queued);
  s->nactions++;
  touch_locked(s);
  return a;
oom:
  *status = 500;
  *msg = "out of memory";
  return NULL;
}

static void clear_state(flyte_standin *s) {
  size_t i;
  for (i = 0; i < s->npacks; i++) {
    free(s->packs[i].id);
    json_decref(s->packs[i].registration);
  }
  for (i = 0; i < s->nactions; i++) {
    free(s->actions[i].pack);
    free(s->actions[i].command);
    json_decref(s->actions[i].input);
    free(s->actions[i].input_text);
    json_decref(s->actions[i].result);
  }
  for (i = 0; i < s->nevents; i++) {
    free(s->events[i].pack);
    json_decref(s->events[i].body);
  }
  free(s->packs);
  free(s->actions);
  free(s->events);
  free(s->authorization);
  free(s->faults);
  s->packs = NULL;
  s->actions = NULL;
  s->events = NULL;
  s->authorization = NULL;
  s->faults = NULL;
  s->npacks = s->packs_cap = s->nactions = s->actions_cap = 0;
  s->nevents = s->events_cap = s->nfaults = s->faults_cap = 0;
  s->faults_served = 0;
  s->last_pack = -1;
  s->first_new = 0;
  memset(s->by_state, 0, sizeof s->by_state);
  s->next_action = 1;
  s->connections = 0;
  memset(s->counts, 0, sizeof s->counts);
}

/* --- API handlers ------------------------------------------------------ */

static void api_discovery(const request *rq, reply *out) {
  const char *b = rq->base;
  json_t *links = json_array();
  if (add_link(links, json_sprintf("%s/v1", b), json_string("self")) ||
      add_link(links, json_sprintf("%s/", b), json_string("up")) ||
      add_link(links, json_sprintf("%s/swagger#!/info/v1", b),
               json_string("help")) ||
      add_link(links, json_sprintf("%s/health", b),
               json_sprintf("%s/swagger#!/info/health", b)) ||
      add_link(links, json_sprintf("%s/v1/packs", b),
               json_sprintf("%s/swagger#!/pack/listPacks", b)) ||
      add_link(links, json_sprintf("%s/v1/flows", b),
               json_sprintf("%s/swagger#!/flow/listFlows", b)) ||
      add_link(links, json_sprintf("%s/v1/datastore", b),
               json_sprintf("%s/swagger#!/datastore/listDatastoreItems", b)) ||
      add_link(links, json_sprintf("%s/v1/audit/flows", b),
               json_sprintf("%s/swagger#!/flowAudit/findFlows", b)) ||
      add_link(links, json_sprintf("%s/v1/swagger", b),
               json_sprintf("%s/swagger", b))) {
    json_decref(links);
    fail(out, 500, "out of memory");
    return;
  }
  out->status = 200;
  if ((out->body = json_pack("{s:o}", "links", links)) == NULL)
    fail(out, 500, "out of memory");
}

/* GET on the other links of /v1: the packs registered, and empty lists of
 * flows, datastore items and flow audits (the stand-in keeps none); the
 * swagger document names the API and no paths. */
static void api_list(flyte_standin *s, const request *rq, reply *out) {
  const char *b = rq->base, *url = rq->url;
  json_t *body = NULL;
  if (strcmp(url, "/v1/packs") == 0) {
    json_t *packs = json_array();
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; packs && i < s->npacks; i++) {
      const pack_rec *p = &s->packs[i];
      json_t *reg = p->registration;
      json_t *labels = json_object_get(reg, "labels");
      if (json_array_append_new(packs, json_pack(
              "{s:s, s:O?, s:o, s:[{s:o, s:s}]}", "id", p->id, "name",
              json_object_get(reg, "name"), "labels",
              labels ? json_deep_copy(labels) : json_object(), "links",
              "href", json_sprintf("%s/v1/packs/%s", b, p->id), "rel",
              "self")) != 0) {
        json_decref(packs);
        packs = NULL;
      }
    }
    pthread_mutex_unlock(&s->lock);
    body = packs ? json_pack("{s:o, s:[{s:o, s:s}, {s:o, s:s}]}", "packs",
                             packs, "links", "href",
                             json_sprintf("%s/v1/packs", b), "rel", "self",
                             "href", json_sprintf("%s/v1", b), "rel", "up")
                 : NULL;
  } else if (strcmp(url, "/swagger") == 0 ||
             strcmp(url, "/v1/swagger") == 0) {
    body = json_pack("{s:s, s:{s:s, s:s}, s:{}}", "swagger", "2.0", "info",
                     "title", "stand-in flyte-api", "version", "v1", "paths");
  } else {
    const char *name =
        strcmp(url, "/v1/datastore") == 0 ? "datastore" : "flows";
    body = json_pack("{s:[], s:[{s:o, s:s}, {s:o, s:s}]}", name, "links",
                     "href", json_sprintf("%s%s", b, url), "rel", "self",
                     "href", json_sprintf("%s/v1", b), "rel", "up");
  }
  if (body == NULL) {
    fail(out, 500, "out of memory");
    return;
  }
  out->status = 200;
  out->body = body;
}

static void api_register(flyte_standin *s, const request *rq, reply *out) {
  json_error_t jerr;
  json_t *body = json_loadb(rq->body, rq->len, JSON_DECODE_ANY, &jerr);
  json_t *copy = NULL;
  const char *bad;
  char *id = NULL, *eid = NULL;
  pack_rec *p;
  if (body == NULL) {
    fail(out, 400, "body is not JSON");
    goto cleanup;
  }
  if ((bad = check_pack(body)) != NULL) {
    fail(out, 400, bad);
    goto cleanup;
  }
  if ((id = pack_id_of(body)) == NULL || (eid = escape(id)) == NULL ||
      (copy = json_deep_copy(body)) == NULL) {
    fail(out, 500, "out of memory");
    goto cleanup;
  }
  pthread_mutex_lock(&s->lock);
  if ((p = find_pack(s, id)) == NULL) {
    pack_rec *arr = grow(s->packs, &s->packs_cap, s->npacks, sizeof *arr);
    if (arr != NULL) {
      s->packs = arr;
      p = &arr[s->npacks++];
      memset(p, 0, sizeof *p);
      p->id = id;
      id = NULL;
    }
  }
  if (p != NULL) {
    json_decref(p->registration);
    p->registration = copy;
    copy = NULL;
    p->registrations++;
    clock_gettime(CLOCK_REALTIME, &p->last_seen);
    s->last_pack = p - s->packs;
    touch_locked(s);
    out->body = pack_echo(rq->base, p);
    out->note_pack = strdup(p->id);
  }
  pthread_mutex_unlock(&s->lock);
  out->location = CAT(rq->base, "/v1/packs/", eid);
  if (out->body == NULL || out->location == NULL) {
    fail(out, 500, "out of memory");
    goto cleanup;
  }
  out->status = 201;
  out->note_kind = "registration";
  out->note_body = json_incref(body);
cleanup:
  json_decref(body);
  json_decref(copy);
  free(id);
  free(eid);
}

static void api_take(flyte_standin *s, const request *rq, reply *out) {
  char *eid = escape(rq->pack);
  action_rec *a = NULL;
  json_t *input = NULL;
  pack_rec *p;
  if (eid == NULL) {
    fail(out, 500, "out of memory");
    return;
  }
  pthread_mutex_lock(&s->lock);
  if ((p = find_pack(s, rq->pack)) != NULL) {
    clock_gettime(CLOCK_REALTIME, &p->last_seen);
    /* skip what was taken already: a deep queue costs no scan per take */
    while (s->first_new < s->nactions &&
           s->actions[s->first_new].state != ST_NEW)
      s->first_new++;
    for (size_t i = s->first_new; i < s->nactions && a == NULL; i++) {
      action_rec *c = &s->actions[i];
      if (c->state == ST_NEW && strcmp(c->pack, p->id) == 0) a = c;
    }
  }
  if (a != NULL && a->input_text != NULL &&
      (out->input_text = strdup(a->input_text)) == NULL)
    a = NULL; /* out of memory: the action stays NEW */
  if (a != NULL && (a->input == NULL ||
                    (input = json_deep_copy(a->input)) != NULL)) {
    out->body = json_pack("{s:s, s:o*, s:[{s:o, s:o}]}", "command",
        a->command, "input", input, "links",
        "href", json_sprintf("%s/v1/packs/%s/actions/%ld/result", rq->base,
                             eid, a->id),
        "rel", json_sprintf("%s/swagger#/actionResult", rq->base));
    if (out->body != NULL) {
      a->state = ST_PENDING;
      s->by_state[ST_NEW]--;
      s->by_state[ST_PENDING]++;
      a->t_taken = monotonic();
      clock_gettime(CLOCK_REALTIME, &a->at_taken);
      s->counts[C_TAKE_ACTION]++;
      touch_locked(s);
    }
  }
  pthread_mutex_unlock(&s->lock);
  free(eid);
  if (p == NULL) {
    fail(out, 404, "no such pack");
  } else if (a == NULL) {
    out->status = 204;
  } else if (out->body == NULL) {
    fail(out, 500, "out of memory");
  } else {
    out->status = 200;
    out->note_kind = "take";
    out->note_pack = strdup(rq->pack);
    out->note_body = json_incref(out->body);
  }
}

/* A result (is_result) or a spontaneous event. flyte-api looks the pack up
 * first, then reads the body, then looks the action up. */
static void api_event(flyte_standin *s, const request *rq, reply *out,
                      int is_result) {
  json_t *body = json_loadb(rq->body, rq->len, JSON_DECODE_ANY, NULL);
  json_t *copy = json_deep_copy(body); /* what the state keeps */
  event_rec *arr;
  action_rec *a;
  pthread_mutex_lock(&s->lock);
  if (find_pack(s, rq->pack) == NULL) {
    fail(out, 404, "no such pack");
  } else if (!is_event_body(body)) {
    fail(out, 400, "body must be an object with string event and an "
                   "RFC 3339 createdAt");
  } else if (copy == NULL) {
    fail(out, 500, "out of memory");
  } else if (is_result) {
    if ((a = find_action(s, rq->action)) == NULL ||
        strcmp(a->pack, rq->pack) != 0) {
      a = NULL;
      fail(out, 404, "no such action");
    } else if (a->state != ST_PENDING) {
      fail(out, 500, "action is not PENDING");
    } else {
      a->result = copy;
      copy = NULL;
      a->state = ST_DONE;
      s->by_state[ST_PENDING]--;
      s->by_state[ST_DONE]++;
      a->t_done = monotonic();
      clock_gettime(CLOCK_REALTIME, &a->at_done);
      out->status = 202;
    }
    if (a != NULL) {
      a->results++;
      touch_locked(s);
    }
  } else {
    arr = grow(s->events, &s->events_cap, s->nevents, sizeof *arr);
    if (arr != NULL) s->events = arr;
    if (arr == NULL || (arr[s->nevents].pack = strdup(rq->pack)) == NULL) {
      fail(out, 500, "out of memory");
    } else {
      arr[s->nevents++].body = copy;
      copy = NULL;
      out->status = 202;
      touch_locked(s);
    }
  }
  pthread_mutex_unlock(&s->lock);
  if (out->status == 202) {
    out->note_kind = is_result ? "result" : "event";
    out->note_pack = strdup(rq->pack);
    out->note_body = json_incref(body);
  }
  json_decref(body);
  json_decref(copy);
}

/* Splits an API path; sets rq->pack (owned) and rq->action. */
static route_kind api_route(const char *url, const char *method,
                            request *rq) {
  static const char PACKS[] = "/v1/packs/";
  const char *rest, *end;
  route_kind k;
  if (strcmp(url, "/v1") == 0) return R_DISCOVERY;
  if (strcmp(url, "/health") == 0) return R_HEALTH;
  if (strcmp(url, "/v1/packs") == 0)
    return strcmp(method, "GET") == 0 ? R_LIST : R_REGISTER;
  if (strcmp(url, "/v1/flows") == 0 || strcmp(url, "/v1/datastore") == 0 ||
      strcmp(url, "/v1/audit/flows") == 0 || strcmp(url, "/v1/swagger") == 0 ||
      strcmp(url, "/swagger") == 0)
    return R_LIST;
  if (strncmp(url, PACKS, sizeof PACKS - 1) != 0) return R_NONE;
  rest = url + sizeof PACKS - 1;
  end = rest + strlen(rest);
  if (ends_with(rest, "/actions/take")) {
    k = R_TAKE;
    end -= strlen("/actions/take");
  } else if (ends_with(rest, "/events")) {
    k = R_EVENT;
    end -= strlen("/events");
  } else if (ends_with(rest, "/result")) {
    /* .../{id}/actions/{n}/result: the last "/actions/" splits it */
    size_t i = (size_t)(end - rest) - strlen("/result");
    const char *p;
    for (; i >= 9 && memcmp(rest + i - 9, "/actions/", 9) != 0; i--)
      continue;
    if (i < 9) return R_NONE;
    k = R_RESULT;
    for (p = rest + i; *p >= '0' && *p <= '9' && rq->action < 100000000; p++)
      rq->action = rq->action * 10 + (*p - '0');
    if (p != end - strlen("/result")) rq->action = 0; /* never found */
    end = rest + i - 9;
  } else {
    return R_NONE;
  }
  if (end == rest) return R_NONE;
  rq->pack = strndup(rest, (size_t)(end - rest));
  return k;
}

/* --- injected faults --------------------------------------------------- */

/* Takes the next fault for route k into *f, if there is one; call with the
 * lock held. Returns 1 when there is. */
static int next_fault_locked(flyte_standin *s, route_kind k, fault_rec *f) {
  for (size_t i = 0; i < s->nfaults; i++) {
    if (s->faults[i].route != k) continue;
    *f = s->faults[i];
    s->faults_served++;
    if (--s->faults[i].count == 0) {
      memmove(&s->faults[i], &s->faults[i + 1],
              (s->nfaults - i - 1) * sizeof *s->faults);
      s->nfaults--;
    }
    return 1;
  }
  return 0;
}

/* Holds the connection thread for a fault's delay, or until the stand-in
 * stops (so that stopping never waits out a delay). */
static void fault_sleep(flyte_standin *s, double seconds) {
  struct timespec until;
  flyte_deadline_in(seconds, &until);
  pthread_mutex_lock(&s->lock);
  while (!s->stopping &&
         pthread_cond_timedwait(&s->wake, &s->lock, &until) == 0)
    continue;
  pthread_mutex_unlock(&s->lock);
}

/* Whether the client has closed the connection (it gave up waiting). The
 * whole request has been read, so anything readable is its end. */
static int client_gone(struct MHD_Connection *conn) {
  const union MHD_ConnectionInfo *info =
      MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
  struct pollfd p;
  ssize_t n;
  char c;
  if (info == NULL) return 0;
  p.fd = info->connect_fd;
  p.events = POLLIN;
  p.revents = 0;
  if (poll(&p, 1, 0) <= 0) return 0;
  if (p.revents & (POLLHUP | POLLERR)) return 1;
  n = recv(p.fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

/* Puts the fault's status (and a short error body) in place of the reply's,
 * and marks the body to be garbled. */
static void apply_fault(const fault_rec *f, reply *out) {
  if (f->status != 0) {
    fail(out, f->status, "fault injected by /dev/faults");
    free(out->location);
    out->location = NULL;
    out->allow = NULL;
  }
  out->garble = f->body;
}

/* Checks a POST /dev/faults body into *f; returns NULL or what is wrong. */
static const char *parse_fault(json_t *body, fault_rec *f) {
  const char *name;
  json_t *v;
  memset(f, 0, sizeof *f);
  f->count = 1;
  if (!json_is_object(body)) return "body must be a JSON object";
  name = json_string_value(json_object_get(body, "route"));
  for (int k = R_DISCOVERY; name != NULL && k <= R_EVENT; k++)
    if (strcmp(name, ROUTE_NAME[k]) == 0) f->route = (route_kind)k;
  if (f->route == R_NONE)
    return "route must be discovery, health, register, take, result or "
           "event";
  if (is_set(v = json_object_get(body, "status"))) {
    if (!json_is_integer(v) || json_integer_value(v) < 100 ||
        json_integer_value(v) > 599)
      return "status must be an HTTP status from 100 to 599";
    f->status = (unsigned)json_integer_value(v);
  }
  if (is_set(v = json_object_get(body, "delay"))) {
    if (!json_is_number(v) || json_number_value(v) < 0 ||
        json_number_value(v) > MAX_FAULT_DELAY)
      return "delay must be a number of seconds from 0 to 30";
    f->delay = json_number_value(v);
  }
  if (is_set(v = json_object_get(body, "body"))) {
    name = json_string_value(v);
    for (int g = G_TRUNCATED; name != NULL && g <= G_EMPTY; g++)
      if (strcmp(name, GARBLE_NAME[g]) == 0) f->body = (garble)g;
    if (f->body == G_NONE) return "body must be truncated, invalid or empty";
  }
  if (is_set(v = json_object_get(body, "count"))) {
    if (!json_is_integer(v) || json_integer_value(v) < 1)
      return "count must be an integer of at least 1";
    f->count = (long)json_integer_value(v);
  }
  if (is_set(v = json_object_get(body, "after"))) {
    if (!json_is_boolean(v)) return "after must be true or false";
    f->after = json_is_true(v);
  }
  if (f->status == 0 && f->delay == 0 && f->body == G_NONE)
    return "a fault needs a status, a delay or a body";
  return NULL;
}

/* --- API dispatch ------------------------------------------------------- */

/* Handles an API request as flyte-api would. */
static void api_answer(flyte_standin *s, request *rq, route_kind k,
                       int method_ok, int guarded, const char *auth,
                       reply *out) {
  if (guarded && s->jwt != NULL) {
    if (auth == NULL) {
      fail(out, 401, "an Authorization bearer token is required");
      return;
    }
    if (strncmp(auth, "Bearer ", 7) != 0 || strcmp(auth + 7, s->jwt) != 0) {
      fail(out, 403, "the bearer token is not accepted");
      return;
    }
  }
  if (k == R_NONE) {
    fail(out, 404, "no such path");
    return;
  }
  if (k >= R_TAKE && rq->pack == NULL) {
    fail(out, 500, "out of memory");
    return;
  }
  if (!method_ok) {
    fail(out, 405, "method not allowed");
    out->allow = ROUTE[k].method;
    return;
  }
  switch (k) {
  case R_DISCOVERY: api_discovery(rq, out); break;
  case R_HEALTH:
    out->status = 200;
    if ((out->body = json_pack("{s:s}", "status", "ok")) == NULL)
      fail(out, 500, "out of memory");
    break;
  case R_REGISTER: api_register(s, rq, out); break;
  case R_LIST: api_list(s, rq, out); break;
  case R_TAKE: api_take(s, rq, out); break;
  case R_RESULT: api_event(s, rq, out, 1); break;
  case R_EVENT: api_event(s, rq, out, 0); break;
  case R_NONE: break;
  }
}

/* Counts the request, then answers it, with the next fault injected for
 * its route if there is one. A fault without `after` is served instead of
 * the handler: after its delay, a request whose client has given up is not
 * handled at all (as when a server hangs before reaching the handler). */
static void api_dispatch(flyte_standin *s, request *rq, const char *url,
                         const char *method, reply *out) {
  const char *auth = MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND,
      MHD_HTTP_HEADER_AUTHORIZATION);
  route_kind k = api_route(url, method, rq);
  int method_ok = k != R_NONE && strcmp(method, ROUTE[k].method) == 0;
  int guarded = strcmp(url, "/v1") == 0 || strncmp(url, "/v1/", 4) == 0 ||
                strcmp(url, "/health") == 0;
  int faulty;
  fault_rec f;
  pthread_mutex_lock(&s->lock);
  if (auth != NULL) {
    free(s->authorization);
    s->authorization = strdup(auth); /* NULL when out of memory: shown so */
  }
  if (method_ok && ROUTE[k].counter >= 0) s->counts[ROUTE[k].counter]++;
  faulty = method_ok && next_fault_locked(s, k, &f);
  pthread_mutex_unlock(&s->lock);
  if (faulty && !f.after) {
    if (f.delay > 0) fault_sleep(s, f.delay);
    if (f.status == 0 && client_gone(rq->conn)) {
      fail(out, 503, "the client left during the injected delay");
      return;
    }
    if (f.status != 0) {
      apply_fault(&f, out);
      return;
    }
  }
  api_answer(s, rq, k, method_ok, guarded, auth, out);
  if (faulty && f.after && f.delay > 0) fault_sleep(s, f.delay);
  if (faulty) apply_fault(&f, out);
}

/* --- /dev/ handlers ---------------------------------------------------- */

static void dev_enqueue(flyte_standin *s, const request *rq, reply *out) {
  char *padded = NULL;
  json_t *body = json_loadb(rq->body, rq->len, JSON_DECODE_ANY, NULL);
  json_t *cmd = json_object_get(body, "command");
  json_t *pack = json_object_get(body, "pack");
  const char *msg = NULL;
  unsigned status = 500;
  action_rec *a = NULL;
  if (!json_is_object(body)) {
    fail(out, 400, "body must be a JSON object");
    goto cleanup;
  }
  if (!json_is_string(cmd) || json_string_length(cmd) == 0) {
    fail(out, 400, "command must be a non-empty string");
    goto cleanup;
  }
  if (is_set(pack) && !json_is_string(pack)) {
    fail(out, 400, "pack must be a string");
    goto cleanup;
  }
  json_t *text = json_object_get(body, "input_text");
  if (is_set(text) && (!json_is_string(text) ||
                       is_set(json_object_get(body, "input")))) {
    fail(out, 400, "input_text must be a string, without input");
    goto cleanup;
  }
  /* input_pad: an input of that many bytes ({"pad": "xx..."}), sent as
   * text: for replies larger than a host keeps */
  json_t *pad = json_object_get(body, "input_pad");
  if (is_set(pad)) {
    if (!json_is_integer(pad) || json_integer_value(pad) < 0 ||
        json_integer_value(pad) > (256 << 20) || is_set(text) ||
        is_set(json_object_get(body, "input"))) {
      fail(out, 400, "input_pad must be a whole number of bytes up to "
                     "256 MiB, without input or input_text");
      goto cleanup;
    }
    size_t n = (size_t)json_integer_value(pad);
    if ((padded = malloc(n + 12)) == NULL) {
      fail(out, 500, "out of memory");
      goto cleanup;
    }
    memcpy(padded, "{\"pad\":\"", 8);
    memset(padded + 8, 'x', n);
    memcpy(padded + 8 + n, "\"}", 3);
  }
  json_t *count = json_object_get(body, "count");
  if (is_set(count) &&
      (!json_is_integer(count) || json_integer_value(count) < 1 ||
       json_integer_value(count) > 1000000)) {
    fail(out, 400, "count must be a whole number from 1 to 1000000");
    goto cleanup;
  }
  long n = is_set(count) ? (long)json_integer_value(count) : 1;
  long first = 0;
  pthread_mutex_lock(&s->lock);
  /* count: that many copies at once, for load (the benchmark) */
  for (long k = 0; k < n; k++) {
    a = enqueue_locked(s, json_string_value(pack), json_string_value(cmd),
                       json_object_get(body, "input"),
                       json_is_true(json_object_get(body, "any_command")),
                       &status, &msg);
    if (a == NULL) break;
    if ((is_set(text) || padded) &&
        (a->input_text = strdup(padded ? padded
                                       : json_string_value(text))) == NULL) {
      a = NULL;
      msg = "out of memory";
      break;
    }
    if (k == 0) first = a->id;
  }
  if (a != NULL) {
    out->body = json_pack("{s:I, s:s, s:s, s:I}", "id", (json_int_t)first,
                          "pack", a->pack, "command", a->command, "last",
                          (json_int_t)a->id);
    out->note_pack = strdup(a->pack);
  }
  pthread_mutex_unlock(&s->lock);
  if (a == NULL) {
    fail(out, status, msg);
  } else if (out->body == NULL) {
    fail(out, 500, "out of memory");
  } else {
    out->status = 201;
    out->note_kind = "action";
    out->note_body = json_incref(body);
  }
cleanup:
  free(padded);
  json_decref(body);
}

/* GET /dev/actions/{N}: the action; /dev/actions/{N}/result: its result
 * alone (404 until there is one), readable even when the input is not. */
static void dev_action(flyte_standin *s, const char *num, reply *out) {
  char *end;
  long id = strtol(num, &end, 10);
  int result_only = strcmp(end, "/result") == 0;
  action_rec *a;
  pthread_mutex_lock(&s->lock);
  a = *num != '\0' && (*end == '\0' || result_only) ? find_action(s, id)
                                                    : NULL;
  if (a != NULL && !result_only) out->body = action_json(a);
  if (a != NULL && result_only && a->result) {
    out->body = json_deep_copy(a->result);
    if (out->body == NULL) out->body = json_null(); /* fails below */
  }
  pthread_mutex_unlock(&s->lock);
  if (a == NULL)
    fail(out, 404, "no such action");
  else if (result_only && out->body == NULL)
    fail(out, 404, "no result yet");
  else if (out->body == NULL || json_is_null(out->body))
    fail(out, 500, "out of memory");
  else
    out->status = 200;
}

/* POST /dev/faults: queues a fault (parse_fault says what it takes). */
static void dev_fault(flyte_standin *s, const request *rq, reply *out) {
  json_t *body = json_loadb(rq->body, rq->len, JSON_DECODE_ANY, NULL);
  const char *bad;
  fault_rec f, *arr = NULL;
  long pending = 0;
  if ((bad = parse_fault(body, &f)) != NULL) {
    fail(out, 400, bad);
    goto cleanup;
  }
  pthread_mutex_lock(&s->lock);
  arr = grow(s->faults, &s->faults_cap, s->nfaults, sizeof *arr);
  if (arr != NULL) {
    s->faults = arr;
    arr[s->nfaults++] = f;
  }
  for (size_t i = 0; i < s->nfaults; i++) pending += s->faults[i].count;
  pthread_mutex_unlock(&s->lock);
  if (arr == NULL) {
    fail(out, 500, "out of memory");
  } else if ((out->body = json_pack("{s:I}", "faults_pending",
                                    (json_int_t)pending)) == NULL) {
    fail(out, 500, "out of memory");
  } else {
    out->status = 201;
  }
cleanup:
  json_decref(body);
}

/* The packs as /dev/state shows them; call with the lock held. NULL when
 * out of memory. */
static json_t *packs_json(const flyte_standin *s) {
  json_t *packs = json_array();
  char when[48];
  int rc = 0;
  for (size_t i = 0; packs != NULL && i < s->npacks; i++) {
    const pack_rec *p = &s->packs[i];
    format_time(&p->last_seen, when);
    rc |= json_array_append_new(packs, json_pack("{s:s, s:o, s:I, s:s}",
        "id", p->id, "registration", json_deep_copy(p->registration),
        "registrations",
        (json_int_t)p->registrations, "lastSeen", when));
  }
  if (rc != 0) {
    json_decref(packs);
    return NULL;
  }
  return packs;
}

/* The actions from index `from` on, as /dev/state shows them; call with the
 * lock held. NULL when out of memory. */
static json_t *actions_json(const flyte_standin *s, size_t from) {
  json_t *actions = json_array();
  int rc = 0;
  for (size_t i = from; actions != NULL && i < s->nactions; i++)
    rc |= json_array_append_new(actions, action_json(&s->actions[i]));
  if (rc != 0) {
    json_decref(actions);
    return NULL;
  }
  return actions;
}

/* The events from index `from` on, as {"pack", "body"}; call with the lock
 * held. NULL when out of memory. */
static json_t *events_json(const flyte_standin *s, size_t from) {
  json_t *events = json_array();
  int rc = 0;
  for (size_t i = from; events != NULL && i < s->nevents; i++)
    rc |= json_array_append_new(events, json_pack("{s:s, s:o}",
        "pack", s->events[i].pack, "body", json_deep_copy(s->events[i].body)));
  if (rc != 0) {
    json_decref(events);
    return NULL;
  }
  return events;
}

/* Everything the stand-in holds; call with the lock held. */
static json_t *state_json(flyte_standin *s) {
  json_t *packs = packs_json(s), *actions = actions_json(s, 0);
  json_t *events = events_json(s, 0), *counts = json_object();
  size_t i;
  long pending = 0;
  int rc = packs == NULL || actions == NULL || events == NULL;
  for (i = 0; i < s->nfaults; i++) pending += s->faults[i].count;
  for (i = 0; i < C_COUNT; i++)
    rc |= json_object_set_new(counts, COUNTER_NAME[i],
                              json_integer(s->counts[i]));
  if (rc != 0) {
    json_decref(packs);
    json_decref(actions);
    json_decref(events);
    json_decref(counts);
    return NULL;
  }
  return json_pack("{s:o, s:o, s:o, s:o, s:I, s:s?, s:I, s:I}", "packs",
                   packs, "actions", actions, "events", events, "requests",
                   counts, "connections", (json_int_t)s->connections,
                   "authorization", s->authorization, "faults_served",
                   (json_int_t)s->faults_served, "faults_pending",
                   (json_int_t)pending);
}

/* What the dev page shows: the revision, the packs, and the newest
 * WATCH_LIMIT actions and events (oldest first, as in /dev/state) with
 * their totals; call with the lock held. NULL when out of memory. */
static json_t *watch_json(flyte_standin *s) {
  size_t na = s->nactions > WATCH_LIMIT ? s->nactions - WATCH_LIMIT : 0;
  size_t ne = s->nevents > WATCH_LIMIT ? s->nevents - WATCH_LIMIT : 0;
  json_t *packs = packs_json(s), *actions = actions_json(s, na);
  json_t *events = events_json(s, ne);
  if (packs == NULL || actions == NULL || events == NULL) {
    json_decref(packs);
    json_decref(actions);
    json_decref(events);
    return NULL;
  }
  return json_pack("{s:I, s:o, s:o, s:o, s:I, s:I, s:O?}", "revision",
                   (json_int_t)s->revision, "packs", packs, "actions",
                   actions, "events", events, "total_actions",
                   (json_int_t)s->nactions, "total_events",
                   (json_int_t)s->nevents, "code", s->code);
}

void flyte_standin_set_code(flyte_standin *s, int ok, const char *error,
                            const char *at, const char *serving) {
  json_t *code = json_pack("{s:s, s:s?, s:s?, s:s?}", "reload",
                           at == NULL ? "none" : ok ? "success" : "failure",
                           "error", error, "at", at, "serving", serving);
  if (code == NULL) return;
  pthread_mutex_lock(&s->lock);
  json_decref(s->code);
  s->code = code;
  touch_locked(s);
  pthread_mutex_unlock(&s->lock);
}

/* GET /dev/watch[?since=R]: watch_json at once without `since`; with it,
 * once the revision is no longer R, or as it is after WATCH_WAIT seconds
 * (a long poll: the page asks again with the revision it got). */
static void dev_watch(flyte_standin *s, const request *rq, reply *out) {
  const char *since = MHD_lookup_connection_value(rq->conn,
      MHD_GET_ARGUMENT_KIND, "since");
  struct timespec until;
  char *end;
  long seen = -1;
  if (since != NULL) {
    errno = 0;
    seen = strtol(since, &end, 10);
    if (*since == '\0' || *end != '\0' || errno != 0 || seen < 0) {
      fail(out, 400, "since must be a revision number");
      return;
    }
  }
  flyte_deadline_in(WATCH_WAIT, &until);
  pthread_mutex_lock(&s->lock);
  while (s->revision == seen && !s->stopping &&
         pthread_cond_timedwait(&s->changed, &s->lock, &until) == 0)
    continue;
  out->body = watch_json(s);
  pthread_mutex_unlock(&s->lock);
  if (out->body == NULL)
    fail(out, 500, "out of memory");
  else
    out->status = 200;
}

/* True when method is want; else sets a 405. */
static int method_is(const char *method, const char *want, reply *out) {
  if (strcmp(method, want) == 0) return 1;
  fail(out, 405, "method not allowed");
  out->allow = want;
  return 0;
}

static void dev_dispatch(flyte_standin *s, const request *rq, const char *url,
                         const char *method, reply *out) {
  static const char ACTIONS[] = "/dev/actions/";
  if (strcmp(url, "/dev/actions") == 0) {
    if (method_is(method, "POST", out)) dev_enqueue(s, rq, out);
  } else if (strncmp(url, ACTIONS, sizeof ACTIONS - 1) == 0) {
    if (method_is(method, "GET", out))
      dev_action(s, url + sizeof ACTIONS - 1, out);
  } else if (strcmp(url, "/dev/stats") == 0) {
    /* counts only, kept as they change: cheap to poll while a load runs
     * (a scan of every action under the lock held up takes and results) */
    if (!method_is(method, "GET", out)) return;
    pthread_mutex_lock(&s->lock);
    const long *by_state = s->by_state;
    out->body = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "new",
                          (json_int_t)by_state[ST_NEW], "pending",
                          (json_int_t)by_state[ST_PENDING], "done",
                          (json_int_t)by_state[ST_DONE], "events",
                          (json_int_t)s->nevents, "connections",
                          (json_int_t)s->connections, "takes",
                          (json_int_t)s->counts[C_TAKE], "results",
                          (json_int_t)s->counts[C_RESULT], "slow_peak",
                          (json_int_t)s->slow_peak);
    pthread_mutex_unlock(&s->lock);
    if (out->body == NULL)
      fail(out, 500, "out of memory");
    else
      out->status = 200;
  } else if (strcmp(url, "/dev/events") == 0) {
    if (!method_is(method, "GET", out)) return;
    pthread_mutex_lock(&s->lock);
    out->body = events_json(s, 0);
    pthread_mutex_unlock(&s->lock);
    if (out->body == NULL)
      fail(out, 500, "out of memory");
    else
      out->status = 200;
  } else if (strcmp(url, "/dev/watch") == 0) {
    if (method_is(method, "GET", out)) dev_watch(s, rq, out);
  } else if (strcmp(url, "/dev/state") == 0) {
    if (!method_is(method, "GET", out)) return;
    pthread_mutex_lock(&s->lock);
    out->body = state_json(s);
    pthread_mutex_unlock(&s->lock);
    if (out->body == NULL)
      fail(out, 500, "out of memory");
    else
      out->status = 200;
  } else if (strcmp(url, "/dev/faults") == 0) {
    if (strcmp(method, "POST") == 0) {
      dev_fault(s, rq, out);
    } else if (strcmp(method, "DELETE") == 0) {
      pthread_mutex_lock(&s->lock);
      free(s->faults);
      s->faults = NULL;
      s->nfaults = s->faults_cap = 0;
      pthread_mutex_unlock(&s->lock);
      out->status = 204;
    } else {
      fail(out, 405, "method not allowed");
      out->allow = "POST, DELETE";
    }
  } else if (strcmp(url, "/dev/slow") == 0) {
    /* a service that takes its time, for handlers that wait on HTTP (specs
     * and `make bench`): any method, answered after ?ms= milliseconds */
    const char *ms = MHD_lookup_connection_value(rq->conn,
                                                 MHD_GET_ARGUMENT_KIND, "ms");
    char *end = NULL;
    long n = ms ? strtol(ms, &end, 10) : 0;
    if (ms && (*end != '\0' || n < 0 || n > 30000)) {
      fail(out, 400, "ms must be a whole number of milliseconds, 0 to 30000");
      return;
    }
    pthread_mutex_lock(&s->lock);
    if (++s->slow_now > s->slow_peak) s->slow_peak = s->slow_now;
    pthread_mutex_unlock(&s->lock);
    if (n > 0) fault_sleep(s, (double)n / 1000);
    pthread_mutex_lock(&s->lock);
    s->slow_now--;
    pthread_mutex_unlock(&s->lock);
    out->body = json_pack("{s:I}", "slept_ms", (json_int_t)n);
    if (out->body == NULL)
      fail(out, 500, "out of memory");
    else
      out->status = 200;
  } else if (strcmp(url, "/dev/reset") == 0) {
    if (!method_is(method, "POST", out)) return;
    pthread_mutex_lock(&s->lock);
    clear_state(s);
    touch_locked(s);
    pthread_mutex_unlock(&s->lock);
    out->status = 204;
  } else {
    fail(out, 404, "no such path");
  }
}

/* --- MHD glue ---------------------------------------------------------- */

/* Tells the notify callback (outside the lock), sends the reply and frees
 * its parts. */
static enum MHD_Result finish(flyte_standin *s, struct MHD_Connection *conn,
                              reply *r) {
  struct MHD_Response *resp = NULL;
  enum MHD_Result ret = MHD_NO;
  char *text = NULL;
  if (r->note_kind != NULL && s->notify != NULL && r->note_pack != NULL) {
    char *json = json_dumps(r->note_body, JSON_COMPACT | JSON_ENCODE_ANY);
    if (json != NULL) s->notify(s->notify_ud, r->note_kind, r->note_pack, json);
    free(json);
  }
  if (r->status == 0) fail(r, 500, "out of memory");
  if (r->body != NULL && (text = json_dumps(r->body, JSON_COMPACT)) == NULL)
    r->status = 500;
  if (text != NULL && r->input_text != NULL && r->status == 200 &&
      text[0] == '{') {
    char *whole = CAT("{\"input\":", r->input_text, text[1] == '}' ? "" : ",",
                      text + 1);
    free(text);
    if ((text = whole) == NULL) r->status = 500;
  }
  if (r->garble == G_TRUNCATED && text != NULL) {
    text[strlen(text) / 2] = '\0';
  } else if (r->garble == G_INVALID || r->garble == G_EMPTY) {
    free(text); /* the invalid body is NULL (empty) when out of memory */
    text = r->garble == G_INVALID ? strdup("{not json") : NULL;
  }
  resp = MHD_create_response_from_buffer(text ? strlen(text) : 0, text,
      text ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
  if (resp == NULL) {
    free(text);
    goto cleanup;
  }
  if ((text != NULL && MHD_add_response_header(resp,
           MHD_HTTP_HEADER_CONTENT_TYPE, JSON_TYPE) != MHD_YES) ||
      (r->location != NULL && MHD_add_response_header(resp,
           MHD_HTTP_HEADER_LOCATION, r->location) != MHD_YES) ||
      (r->allow != NULL && MHD_add_response_header(resp,
           MHD_HTTP_HEADER_ALLOW, r->allow) != MHD_YES))
    goto cleanup;
  ret = MHD_queue_response(conn, r->status, resp);
cleanup:
  if (resp != NULL) MHD_destroy_response(resp);
  json_decref(r->body);
  json_decref(r->note_body);
  free(r->location);
  free(r->note_pack);
  free(r->input_text);
  return ret;
}

/* GET / and /index.html: the dev page, from the binary. The policy keeps
 * it to its own inline script and style, and to this origin. */
static enum MHD_Result serve_page(struct MHD_Connection *conn) {
  static const char POLICY[] = "default-src 'none'; script-src "
      "'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
      "img-src data:; base-uri 'none'; form-action 'none'";
  struct MHD_Response *resp = MHD_create_response_from_buffer(
      flyte_devpage_len, (void *)flyte_devpage, MHD_RESPMEM_PERSISTENT);
  enum MHD_Result ret = MHD_NO;
  if (resp == NULL) return MHD_NO;
  if (MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                              "text/html; charset=utf-8") == MHD_YES &&
      MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL,
                              "no-store") == MHD_YES &&
      MHD_add_response_header(resp, "Content-Security-Policy", POLICY) ==
          MHD_YES &&
      MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff") ==
          MHD_YES)
    ret = MHD_queue_response(conn, MHD_HTTP_OK, resp);
  MHD_destroy_response(resp);
  return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
                                  const char *url, const char *method,
                                  const char *version, const char *upload,
                                  size_t *upload_size, void **req_cls) {
  flyte_standin *s = cls;
  body_buf *b = *req_cls;
  request rq = {0};
  reply out = {0};
  const char *host;
  enum MHD_Result ret;
  (void)version;
  if (b == NULL) { /* headers are in; the body (if any) comes next */
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
        MHD_HTTP_HEADER_CONTENT_LENGTH);
    if ((b = calloc(1, sizeof *b)) == NULL) return MHD_NO;
    *req_cls = b;
    if (cl == NULL || strtoull(cl, NULL, 10) <= MAX_BODY) return MHD_YES;
    b->replied = 1;
    fail(&out, 413, "request body over 8 MiB");
    return finish(s, conn, &out);
  }
  if (*upload_size > 0) { /* more body: keep it, or count it as too much */
    size_t n = *upload_size;
    *upload_size = 0;
    if (b->replied || b->too_big || n > MAX_BODY - b->len) {
      b->too_big = 1;
      return MHD_YES;
    }
    if (b->len + n + 1 > b->cap) {
      size_t cap = b->cap ? b->cap : 4096;
      char *data;
      while (cap < b->len + n + 1) cap *= 2;
      if ((data = realloc(b->data, cap)) == NULL) return MHD_NO;
      b->data = data;
      b->cap = cap;
    }
    memcpy(b->data + b->len, upload, n);
    b->len += n;
    return MHD_YES;
  }
  if (b->replied) return MHD_YES;
  b->replied = 1;
  if (b->too_big) {
    fail(&out, 413, "request body over 8 MiB");
    return finish(s, conn, &out);
  }
  if (strcmp(url, "/") == 0 || strcmp(url, "/index.html") == 0) {
    if (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0)
      return serve_page(conn);
    fail(&out, 405, "method not allowed");
    out.allow = "GET, HEAD";
    return finish(s, conn, &out);
  }
  host = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                     MHD_HTTP_HEADER_HOST);
  rq.conn = conn;
  rq.url = url;
  rq.body = b->data != NULL ? b->data : "";
  rq.len = b->len;
  rq.base = CAT("http://", host != NULL ? host : s->hostport);
  if (rq.base == NULL)
    fail(&out, 500, "out of memory");
  else if (strncmp(url, "/dev/", 5) == 0)
    dev_dispatch(s, &rq, url, method, &out);
  else
    api_dispatch(s, &rq, url, method, &out);
  ret = finish(s, conn, &out);
  free((char *)rq.base);
  free(rq.pack);
  return ret;
}

static void on_completed(void *cls, struct MHD_Connection *conn,
                         void **req_cls, enum MHD_RequestTerminationCode toe) {
  body_buf *b = *req_cls;
  (void)cls;
  (void)conn;
  (void)toe;
  if (b == NULL) return;
  free(b->data);
  free(b);
  *req_cls = NULL;
}

static void on_connection(void *cls, struct MHD_Connection *conn,
                          void **socket_ctx,
                          enum MHD_ConnectionNotificationCode code) {
  flyte_standin *s = cls;
  (void)conn;
  (void)socket_ctx;
  if (code != MHD_CONNECTION_NOTIFY_STARTED) return;
  pthread_mutex_lock(&s->lock);
  s->connections++;
  pthread_mutex_unlock(&s->lock);
}

/* --- public ------------------------------------------------------------ */

flyte_standin *flyte_standin_start(const flyte_standin_opts *opts, char *err,
                                   unsigned long errlen) {
  const char *host = opts->bind != NULL ? opts->bind : "127.0.0.1";
  struct sockaddr_in addr;
  const union MHD_DaemonInfo *info;
  pthread_condattr_t ca;
  flyte_standin *s = NULL;
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_port = htons((uint16_t)opts->port);
  if (opts->port < 0 || opts->port > 65535) {
    snprintf(err, errlen, "standin: bad port %d", opts->port);
    goto fail;
  }
  if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
    snprintf(err, errlen, "standin: bad IPv4 address '%s'", host);
    goto fail;
  }
  if ((s = calloc(1, sizeof *s)) == NULL ||
      (opts->jwt != NULL && (s->jwt = strdup(opts->jwt)) == NULL)) {
    snprintf(err, errlen, "standin: out of memory");
    goto fail;
  }
  s->notify = opts->notify;
  s->notify_ud = opts->notify_ud;
  s->last_pack = -1;
  s->next_action = 1;
  pthread_mutex_init(&s->lock, NULL);
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&s->wake, &ca);
  pthread_cond_init(&s->changed, &ca);
  pthread_condattr_destroy(&ca);
  s->daemon = MHD_start_daemon(
      MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
          MHD_USE_POLL | MHD_USE_ERROR_LOG,
      (uint16_t)opts->port, NULL, NULL, on_request, s,
      MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
      MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
      MHD_OPTION_NOTIFY_CONNECTION, on_connection, s, MHD_OPTION_END);
  if (s->daemon == NULL) {
    snprintf(err, errlen, "standin: cannot listen on %s:%d", host,
             opts->port);
    pthread_cond_destroy(&s->wake);
    pthread_cond_destroy(&s->changed);
    pthread_mutex_destroy(&s->lock);
    goto fail;
  }
  info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
  s->port = info != NULL && info->port != 0 ? info->port : opts->port;
  snprintf(s->hostport, sizeof s->hostport, "%s:%d", host, s->port);
  return s;
fail:
  if (s != NULL) free(s->jwt);
  free(s);
  return NULL;
}

int flyte_standin_port(const flyte_standin *s) { return s->port; }

long flyte_standin_enqueue(flyte_standin *s, const char *pack_id,
                           const char *command, const char *input_json,
                           char *err, unsigned long errlen) {
  json_t *input = NULL, *note = NULL;
  json_error_t jerr;
  const char *msg = "out of memory";
  unsigned status;
  char *pack = NULL, *json = NULL;
  action_rec *a;
  long id = -1;
  if (command == NULL || *command == '\0') {
    snprintf(err, errlen, "standin: a command is required");
    goto cleanup;
  }
  if (input_json != NULL &&
      (input = json_loads(input_json, JSON_DECODE_ANY, &jerr)) == NULL) {
    snprintf(err, errlen, "standin: input is not JSON: %s", jerr.text);
    goto cleanup;
  }
  pthread_mutex_lock(&s->lock);
  if ((a = enqueue_locked(s, pack_id, command, input, 0, &status, &msg)) !=
      NULL) {
    id = a->id;
    pack = strdup(a->pack);
    note = json_pack("{s:s, s:s, s:O*}", "pack", a->pack, "command", command,
                     "input", input);
  }
  pthread_mutex_unlock(&s->lock);
  if (id < 0) {
    snprintf(err, errlen, "standin: %s", msg);
    goto cleanup;
  }
  if (s->notify != NULL && pack != NULL && note != NULL &&
      (json = json_dumps(note, JSON_COMPACT)) != NULL)
    s->notify(s->notify_ud, "action", pack, json);
cleanup:
  json_decref(input);
  json_decref(note);
  free(pack);
  free(json);
  return id;
}

void flyte_standin_stop(flyte_standin *s) {
  if (s == NULL) return;
  pthread_mutex_lock(&s->lock);
  s->stopping = 1;
  pthread_cond_broadcast(&s->wake);
  pthread_cond_broadcast(&s->changed);
  pthread_mutex_unlock(&s->lock);
  MHD_stop_daemon(s->daemon);
  clear_state(s);
  pthread_cond_destroy(&s->wake);
  pthread_cond_destroy(&s->changed);
  pthread_mutex_destroy(&s->lock);
  json_decref(s->code);
  free(s->jwt);
  free(s);
}
