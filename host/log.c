/* log.c - the host's log: leveled lines on stderr, as text or JSON.
 *
 * Text: "2026-11-28T20:39:26.123Z INFO  message key=value".
 * JSON: {"time":..., "level":..., "msg":..., "key": "value"}.
 */
#include "log.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static flyte_log_level log_level = FLYTE_LOG_INFO;
static flyte_log_format log_format = FLYTE_LOG_TEXT;

static const char *const level_names[] = {"debug", "info", "warn", "error"};
static const char *const level_tags[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};

void flyte_deadline_in(double seconds, struct timespec *until) {
  clock_gettime(CLOCK_MONOTONIC, until);
  until->tv_sec += (time_t)seconds;
  until->tv_nsec += (long)((seconds - (double)(time_t)seconds) * 1e9);
  if (until->tv_nsec >= 1000000000L) {
    until->tv_sec++;
    until->tv_nsec -= 1000000000L;
  }
}

double flyte_since_start_ms(void) {
  static struct timespec start;
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  if (start.tv_sec == 0 && start.tv_nsec == 0) start = now;
  return (double)(now.tv_sec - start.tv_sec) * 1e3 +
         (double)(now.tv_nsec - start.tv_nsec) / 1e6;
}

void flyte_log_setup(flyte_log_level level, flyte_log_format format) {
  log_level = level;
  log_format = format;
}

int flyte_log_enabled(flyte_log_level level) {
  return level >= log_level && level < FLYTE_LOG_OFF;
}

int flyte_log_level_parse(const char *name) {
  for (int i = 0; i < 4; i++)
    if (strcmp(name, level_names[i]) == 0) return i;
  if (strcmp(name, "warning") == 0) return FLYTE_LOG_WARN;
  return -1;
}

void flyte_time_rfc3339_at(char *buf, size_t n, int digits,
                           const struct timespec *ts) {
  struct tm tm;
  gmtime_r(&ts->tv_sec, &tm);
  size_t len = strftime(buf, n, "%Y-%m-%dT%H:%M:%S", &tm);
  if (digits == 6)
    snprintf(buf + len, n - len, ".%06ldZ", ts->tv_nsec / 1000);
  else
    snprintf(buf + len, n - len, ".%03ldZ", ts->tv_nsec / 1000000);
}

void flyte_time_rfc3339(char *buf, size_t n, int digits) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  flyte_time_rfc3339_at(buf, n, digits, &ts);
}

/* Appends " key=value" to a text line, quoting values with spaces. */
static void text_field(FILE *out, const char *key, const char *value) {
  if (value[0] != '\0' && strpbrk(value, " \t\n\"=") == NULL) {
    fprintf(out, " %s=%s", key, value);
    return;
  }
  json_t *s = json_string(value);
  char *q = s ? json_dumps(s, JSON_ENCODE_ANY) : NULL;
  fprintf(out, " %s=%s", key, q ? q : "\"?\"");
  free(q);
  json_decref(s);
}

/* Writes one finished line. `extra` is a JSON object of more fields (may be
 * NULL); takes no ownership. */
static void emit(flyte_log_level level, const flyte_log_field *fields,
                 int text_fields, json_t *extra, const char *msg) {
  char when[40];
  flyte_time_rfc3339(when, sizeof when, 3);
  char *line = NULL;
  size_t len = 0;
  FILE *out = open_memstream(&line, &len);
  if (out == NULL) return;

  if (log_format == FLYTE_LOG_JSON) {
    json_t *obj = json_object();
    json_object_set_new(obj, "time", json_string(when));
    json_object_set_new(obj, "level", json_string(level_names[level]));
    json_object_set_new(obj, "msg", json_stringn(msg, strlen(msg)));
    for (; fields && fields->key; fields++) {
      /* durations are numbers: "duration_ms": 0.25 */
      size_t klen = strlen(fields->key);
      char *end;
      double v = strtod(fields->value, &end);
      if (klen > 3 && strcmp(fields->key + klen - 3, "_ms") == 0 &&
          *fields->value && *end == '\0')
        json_object_set_new(obj, fields->key, json_real(v));
      else
        json_object_set_new(obj, fields->key, json_string(fields->value));
    }
    if (extra) json_object_update_missing(obj, extra);
    char *text = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    fputs(text ? text : "{}", out);
    free(text);
    json_decref(obj);
  } else {
    fprintf(out, "%s %s %s", when, level_tags[level], msg);
    for (; text_fields && fields && fields->key; fields++)
      text_field(out, fields->key, fields->value);
    const char *key;
    json_t *value;
    if (extra) json_object_foreach(extra, key, value) {
      if (json_is_string(value)) {
        text_field(out, key, json_string_value(value));
      } else {
        char *v = json_dumps(value, JSON_ENCODE_ANY | JSON_COMPACT);
        if (v) fprintf(out, " %s=%s", key, v);
        free(v);
      }
    }
  }
  fputc('\n', out);
  fclose(out);
  fwrite(line, 1, len, stderr);
  fflush(stderr);
  free(line);
}

void flyte_logv(flyte_log_level level, const flyte_log_field *fields,
                const char *fmt, va_list ap) {
  if (!flyte_log_enabled(level)) return;
  char stack[512];
  va_list copy;
  va_copy(copy, ap);
  int n = vsnprintf(stack, sizeof stack, fmt, copy);
  va_end(copy);
  if (n < 0) return;
  if ((size_t)n < sizeof stack) {
    emit(level, fields, 1, NULL, stack);
    return;
  }
  char *big = malloc((size_t)n + 1);
  if (big == NULL) return;
  vsnprintf(big, (size_t)n + 1, fmt, ap);
  emit(level, fields, 1, NULL, big);
  free(big);
}

void flyte_log(flyte_log_level level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  flyte_logv(level, NULL, fmt, ap);
  va_end(ap);
}

void flyte_log_with(flyte_log_level level, const flyte_log_field *fields,
                    int text_fields, const char *fmt, ...) {
  if (!flyte_log_enabled(level)) return;
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  emit(level, fields, text_fields, NULL, msg);
}

void flyte_log_json_fields(flyte_log_level level, const char *msg,
                           const char *fields_json,
                           const flyte_log_field *fields) {
  if (!flyte_log_enabled(level)) return;
  json_t *extra = NULL;
  if (fields_json) {
    extra = json_loads(fields_json, 0, NULL);
    if (extra && !json_is_object(extra)) {
      json_decref(extra);
      extra = NULL;
    }
  }
  emit(level, fields, 1, extra, msg);
  json_decref(extra);
}
