/* config.c - the host's settings, from the environment and flags.
 *
 * One table lists every setting with its variable, its flag and how to read
 * it; the environment is read first, then the flags, so a flag wins.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <strings.h>

#include "log.h"

typedef enum {
  KIND_URL,
  KIND_LABELS,
  KIND_SECONDS,
  KIND_POLL,
  KIND_BOOL,
  KIND_WORKERS,
  KIND_PORT,
  KIND_LEVEL,
  KIND_FORMAT,
  KIND_STRING,
  KIND_TIMEOUT,
  KIND_SIZE,
  KIND_GRACE,
  KIND_OUTBOX,
  KIND_SYNC
} kind;

typedef struct {
  const char *env;  /* NULL: flag only */
  const char *flag; /* NULL: environment only */
  kind kind;
  int negate; /* a bare boolean flag sets 0 (--no-reload) */
} setting;

static const setting settings[] = {
    {"FLYTE_API", "--api", KIND_URL, 0},
    {"FLYTE_LABELS", "--labels", KIND_LABELS, 0},
    {"FLYTE_API_TIMEOUT", "--api-timeout", KIND_SECONDS, 0},
    {"FLYTE_JWT", NULL, KIND_STRING, 0},
    {"FLYTE_INSECURE", "--insecure", KIND_BOOL, 0},
    {"FLYTE_POLL_INTERVAL", "--poll-interval", KIND_POLL, 0},
    {"FLYTE_WORKERS", "--workers", KIND_WORKERS, 0},
    {"FLYTE_CONCURRENCY", "--concurrency", KIND_WORKERS, 0},
    {"FLYTE_HEALTH_PORT", "--health-port", KIND_PORT, 0},
    {"FLYTE_RELOAD", "--no-reload", KIND_BOOL, 1},
    {"FLYTE_LOG_LEVEL", "--log-level", KIND_LEVEL, 0},
    {"FLYTE_LOG_FORMAT", "--log-format", KIND_FORMAT, 0},
    {"FLYTE_HANDLER_TIMEOUT", "--handler-timeout", KIND_TIMEOUT, 0},
    {"FLYTE_MEMORY_LIMIT", "--memory-limit", KIND_SIZE, 0},
    {"FLYTE_SHUTDOWN_GRACE", "--shutdown-grace", KIND_GRACE, 0},
    {"FLYTE_OUTBOX", "--outbox", KIND_OUTBOX, 0},
    {"FLYTE_OUTBOX_SYNC", "--outbox-sync", KIND_SYNC, 0},
    {NULL, "--port", KIND_PORT, 0},
    {NULL, "--send", KIND_STRING, 0},
};

#define NSETTINGS (sizeof settings / sizeof settings[0])

static int fail(char *err, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t n, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, n, fmt, ap);
  va_end(ap);
  return -1;
}

int flyte_parse_seconds(const char *text, double *out) {
  char *end;
  errno = 0;
  double v = strtod(text, &end);
  if (end == text || errno != 0 || !isfinite(v)) return -1;
  if (*end == 's') end++;
  if (*end != '\0' || v < 0) return -1;
  *out = v;
  return 0;
}

int flyte_parse_size(const char *text, size_t *out) {
  char *end;
  errno = 0;
  double v = strtod(text, &end);
  if (end == text || errno != 0 || !isfinite(v) || v < 0) return -1;
  double unit = 1;
  switch (*end) {
  case 'k': case 'K': unit = 1024.0; end++; break;
  case 'm': case 'M': unit = 1024.0 * 1024; end++; break;
  case 'g': case 'G': unit = 1024.0 * 1024 * 1024; end++; break;
  default: break;
  }
  if (unit > 1 && (*end == 'B' || *end == 'b')) end++;
  if (*end != '\0' || v * unit > 1e15) return -1;
  *out = (size_t)(v * unit);
  return 0;
}

static int parse_int(const char *text, long lo, long hi, long *out) {
  char *end;
  errno = 0;
  long v = strtol(text, &end, 10);
  if (end == text || *end != '\0' || errno != 0 || v < lo || v > hi)
    return -1;
  *out = v;
  return 0;
}

static int parse_bool(const char *text, int *out) {
  static const char *const yes[] = {"1", "true", "yes", "on"};
  static const char *const no[] = {"0", "false", "no", "off", ""};
  for (size_t i = 0; i < sizeof yes / sizeof *yes; i++)
    if (strcasecmp(text, yes[i]) == 0) return *out = 1, 0;
  for (size_t i = 0; i < sizeof no / sizeof *no; i++)
    if (strcasecmp(text, no[i]) == 0) return *out = 0, 0;
  return -1;
}

static char *trimmed_copy(const char *p, size_t n) {
  while (n && isspace((unsigned char)*p)) p++, n--;
  while (n && isspace((unsigned char)p[n - 1])) n--;
  return strndup(p, n);
}

void flyte_labels_free(flyte_label *labels, size_t n) {
  for (size_t i = 0; i < n; i++) {
    free(labels[i].key);
    free(labels[i].value);
  }
  free(labels);
}

int flyte_labels_parse(const char *text, flyte_label **out, size_t *n,
                       char *err, size_t errlen) {
  flyte_label *labels = NULL;
  size_t count = 0;
  const char *p = text;
  *out = NULL;
  *n = 0;
  while (*p) {
    const char *comma = strchr(p, ',');
    size_t len = comma ? (size_t)(comma - p) : strlen(p);
    const char *eq = memchr(p, '=', len);
    char *item = trimmed_copy(p, len);
    if (item == NULL) goto nomem;
    if (item[0] == '\0') {
      free(item); /* tolerate "a=b," and empty text */
    } else if (eq == NULL) {
      fail(err, errlen, "label '%s' has no '=' (want key=value,key=value)",
           item);
      free(item);
      goto failed;
    } else {
      free(item);
      flyte_label *grown = realloc(labels, (count + 1) * sizeof *labels);
      if (grown == NULL) goto nomem;
      labels = grown;
      labels[count].key = trimmed_copy(p, (size_t)(eq - p));
      labels[count].value = trimmed_copy(eq + 1, (size_t)(p + len - eq - 1));
      count++;
      if (!labels[count - 1].key || !labels[count - 1].value) goto nomem;
      if (labels[count - 1].key[0] == '\0') {
        fail(err, errlen, "label '=%s' has an empty key",
             labels[count - 1].value);
        goto failed;
      }
    }
    p += len;
    if (*p == ',') p++;
  }
  *out = labels;
  *n = count;
  return 0;
nomem:
  fail(err, errlen, "out of memory");
failed:
  flyte_labels_free(labels, count);
  return -1;
}

/* Applies one value to its setting. `from` names where it came from, for
 * the message ("FLYTE_WORKERS" or "--workers"). */
static int apply(flyte_config *c, const setting *s, const char *from,
                 const char *value, char *err, size_t n) {
  double secs;
  long num;
  int flag;
  switch (s->kind) {
  case KIND_URL:
    if (strncmp(value, "http://", 7) != 0 && strncmp(value, "https://", 8) != 0)
      return fail(err, n, "%s: '%s' is not an http:// or https:// URL", from,
                  value);
    free(c->api);
    c->api = strdup(value);
    /* Links are joined to it as given; drop a trailing slash. */
    while (c->api && strlen(c->api) > 8 && c->api[strlen(c->api) - 1] == '/')
      c->api[strlen(c->api) - 1] = '\0';
    return 0;
  case KIND_LABELS: {
    flyte_label *labels;
    size_t count;
    char why[200];
    if (flyte_labels_parse(value, &labels, &count, why, sizeof why) != 0)
      return fail(err, n, "%s: %s", from, why);
    flyte_labels_free(c->labels, c->nlabels);
    c->labels = labels;
    c->nlabels = count;
    return 0;
  }
  case KIND_SECONDS:
    if (flyte_parse_seconds(value, &secs) != 0 || secs <= 0)
      return fail(err, n, "%s: '%s' is not a positive number of seconds",
                  from, value);
    c->api_timeout = secs;
    return 0;
  case KIND_TIMEOUT:
    if (flyte_parse_seconds(value, &secs) != 0)
      return fail(err, n, "%s: '%s' is not a number of seconds (0 for none)",
                  from, value);
    c->handler_timeout = secs;
    return 0;
  case KIND_SIZE: {
    size_t size;
    if (flyte_parse_size(value, &size) != 0)
      return fail(err, n, "%s: '%s' is not a size (e.g. 64MB, 512k; 0 for "
                  "none)", from, value);
    if (size != 0 && size < 1024 * 1024)
      return fail(err, n, "%s: %s is below the minimum of 1MB", from, value);
    c->memory_limit = size;
    return 0;
  }
  case KIND_GRACE:
    if (flyte_parse_seconds(value, &secs) != 0)
      return fail(err, n, "%s: '%s' is not a number of seconds", from, value);
    c->shutdown_grace = secs;
    return 0;
  case KIND_OUTBOX:
    free(c->outbox);
    c->outbox = NULL;
    c->outbox_set = 1;
    if (value[0] == '\0' || strcmp(value, "off") == 0) return 0;
    c->outbox = strdup(value);
    return 0;
  case KIND_SYNC:
    if (strcmp(value, "always") == 0)
      c->outbox_sync = 1;
    else if (strcmp(value, "off") == 0)
      c->outbox_sync = 0;
    else
      return fail(err, n, "%s: '%s' is not always or off", from, value);
    return 0;
  case KIND_POLL:
    if (flyte_parse_seconds(value, &secs) != 0)
      return fail(err, n, "%s: '%s' is not a number of seconds", from, value);
    if (secs < 0.5)
      return fail(err, n, "%s: %s s is below the minimum of 0.5 s", from,
                  value);
    c->poll_interval = secs;
    c->poll_interval_set = 1;
    return 0;
  case KIND_BOOL:
    if (parse_bool(value, &flag) != 0)
      return fail(err, n, "%s: '%s' is not on/off (true, false, 1, 0)", from,
                  value);
    if (strcmp(s->env, "FLYTE_INSECURE") == 0)
      c->insecure = flag;
    else
      c->reload = flag;
    return 0;
  case KIND_WORKERS:
    if (strcmp(s->flag, "--concurrency") == 0) {
      if (parse_int(value, 1, 100000, &num) != 0)
        return fail(err, n,
                    "%s: '%s' is not a whole number from 1 to 100000", from,
                    value);
      c->concurrency = (int)num;
      return 0;
    }
    if (parse_int(value, 1, 1024, &num) != 0)
      return fail(err, n, "%s: '%s' is not a whole number from 1 to 1024",
                  from, value);
    c->workers = (int)num;
    return 0;
  case KIND_PORT:
    if (parse_int(value, 0, 65535, &num) != 0)
      return fail(err, n, "%s: '%s' is not a port number (0 to 65535)", from,
                  value);
    if (strcmp(s->flag, "--port") == 0) {
      c->dev_port = (int)num;
      c->dev_port_set = 1;
    } else {
      c->health_port = (int)num;
      c->health_port_set = 1;
    }
    return 0;
  case KIND_LEVEL:
    if ((flag = flyte_log_level_parse(value)) < 0)
      return fail(err, n, "%s: '%s' is not one of debug, info, warn, error",
                  from, value);
    c->log_level = flag;
    return 0;
  case KIND_FORMAT:
    if (strcmp(value, "text") == 0)
      c->log_format = FLYTE_LOG_TEXT;
    else if (strcmp(value, "json") == 0)
      c->log_format = FLYTE_LOG_JSON;
    else
      return fail(err, n, "%s: '%s' is not text or json", from, value);
    return 0;
  case KIND_STRING:
    if (s->env && strcmp(s->env, "FLYTE_JWT") == 0) {
      free(c->jwt);
      c->jwt = strdup(value);
    } else {
      free(c->dev_send);
      c->dev_send = strdup(value);
    }
    return 0;
  }
  return fail(err, n, "%s: unknown setting", from);
}

void flyte_config_free(flyte_config *c) {
  free(c->api);
  flyte_labels_free(c->labels, c->nlabels);
  if (c->jwt) {
    memset(c->jwt, 0, strlen(c->jwt));
    free(c->jwt);
  }
  free(c->dev_send);
  free(c->outbox);
  free(c->args);
  memset(c, 0, sizeof *c);
}

int flyte_config_load(flyte_config *c, int argc, char **argv, char *err,
                      size_t errlen) {
  memset(c, 0, sizeof *c);
  c->api_timeout = 10;
  c->poll_interval = 5;
  /* one worker per CPU: each runs many actions at once */
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  c->workers = cpus > 0 ? (cpus > 1024 ? 1024 : (int)cpus) : 1;
  c->concurrency = 256;
  c->memory_limit = (size_t)256 << 20; /* per Lua state */
  c->health_port = 8090;
  c->reload = 1;
  c->log_level = FLYTE_LOG_INFO;
  c->log_format = FLYTE_LOG_TEXT;
  c->dev_port = 8080;
  c->shutdown_grace = 30;
  c->outbox = strdup("flyte-outbox");
  c->outbox_sync = 1;
  c->args = calloc((size_t)argc + 1, sizeof *c->args);
  if (c->args == NULL) return fail(err, errlen, "out of memory");

  for (size_t i = 0; i < NSETTINGS; i++) {
    const char *v = settings[i].env ? getenv(settings[i].env) : NULL;
    if (v == NULL) continue;
    if (apply(c, &settings[i], settings[i].env, v, err, errlen) != 0)
      return -1;
  }

  int only_args = 0;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    if (only_args || a[0] != '-' || a[1] == '\0') {
      c->args[c->nargs++] = argv[i];
      continue;
    }
    if (strcmp(a, "--") == 0) {
      only_args = 1;
      continue;
    }
    const char *eq = strchr(a, '=');
    size_t name_len = eq ? (size_t)(eq - a) : strlen(a);
    const setting *s = NULL;
    for (size_t k = 0; k < NSETTINGS; k++)
      if (settings[k].flag && strlen(settings[k].flag) == name_len &&
          strncmp(settings[k].flag, a, name_len) == 0)
        s = &settings[k];
    if (s == NULL)
      return fail(err, errlen, "unknown option '%.*s' (see flyte-host --help)",
                  (int)name_len, a);
    char from[64];
    snprintf(from, sizeof from, "%.*s", (int)name_len, a);
    if (s->kind == KIND_BOOL) {
      if (eq) {
        if (apply(c, s, from, eq + 1, err, errlen) != 0) return -1;
        if (s->negate) c->reload = !c->reload;
      } else if (s->negate) {
        c->reload = 0;
      } else {
        c->insecure = 1;
      }
      continue;
    }
    const char *value = eq ? eq + 1 : NULL;
    if (value == NULL) {
      if (i + 1 >= argc)
        return fail(err, errlen, "%s needs a value", from);
      value = argv[++i];
    }
    if (apply(c, s, from, value, err, errlen) != 0) return -1;
  }
  return 0;
}
