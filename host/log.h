/* log.h - the host's log: leveled lines on stderr, as text or JSON.
 *
 * Plain C, thread-safe: each line is written with one call so lines from
 * different threads never interleave.
 */
#ifndef FLYTE_LOG_H
#define FLYTE_LOG_H

#include <stdarg.h>
#include <stddef.h>
#include <time.h>

typedef enum {
  FLYTE_LOG_DEBUG = 0,
  FLYTE_LOG_INFO,
  FLYTE_LOG_WARN,
  FLYTE_LOG_ERROR,
  FLYTE_LOG_OFF
} flyte_log_level;

typedef enum { FLYTE_LOG_TEXT = 0, FLYTE_LOG_JSON } flyte_log_format;

/* A key/value pair attached to a line; a NULL key ends a list. */
typedef struct {
  const char *key;
  const char *value;
} flyte_log_field;

void flyte_log_setup(flyte_log_level level, flyte_log_format format);
int flyte_log_enabled(flyte_log_level level);

/* Parse "debug", "info", "warn", "error"; returns -1 when unknown. */
int flyte_log_level_parse(const char *name);

void flyte_log(flyte_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void flyte_logv(flyte_log_level level, const flyte_log_field *fields,
                const char *fmt, va_list ap);

/* A line with fields: in the JSON format they are keys of the object; in
 * text they are appended as key=value only when text_fields is set (when
 * the message already says it all for a person, it is not). */
void flyte_log_with(flyte_log_level level, const flyte_log_field *fields,
                    int text_fields, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* `fields_json` is a JSON object text (may be NULL) merged into the line:
 * for flyte.log calls from pack code. */
void flyte_log_json_fields(flyte_log_level level, const char *msg,
                           const char *fields_json,
                           const flyte_log_field *fields);

/* Writes the current time as RFC 3339 UTC with `digits` (3 or 6) of
 * fractional seconds: 2026-11-28T20:02:34.123456Z. */
void flyte_time_rfc3339(char *buf, size_t n, int digits);
/* The same for a CLOCK_REALTIME time taken earlier. */
void flyte_time_rfc3339_at(char *buf, size_t n, int digits,
                           const struct timespec *ts);

/* The CLOCK_MONOTONIC time `seconds` from now, for pthread_cond_timedwait
 * on a condition variable set to that clock. */
void flyte_deadline_in(double seconds, struct timespec *until);

/* Milliseconds since the process started (CLOCK_MONOTONIC, read at the
 * first call, which main makes first thing). */
double flyte_since_start_ms(void);

#define flyte_debug(...) flyte_log(FLYTE_LOG_DEBUG, __VA_ARGS__)
#define flyte_info(...) flyte_log(FLYTE_LOG_INFO, __VA_ARGS__)
#define flyte_warn(...) flyte_log(FLYTE_LOG_WARN, __VA_ARGS__)
#define flyte_error(...) flyte_log(FLYTE_LOG_ERROR, __VA_ARGS__)

#endif
