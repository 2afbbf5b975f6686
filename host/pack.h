/* pack.h - a pack loaded in a Lua state of its own.
 *
 * The binding between the host's plain C and the pack's Lua: each worker,
 * the observe thread and the health server own one flyte_pack, built from
 * the pack file by the same function. Only plain C data goes in and out.
 */
#ifndef FLYTE_PACK_H
#define FLYTE_PACK_H

#include <jansson.h>
#include <stddef.h>

#include "config.h"
#include "state.h"
#include "task.h"

typedef struct flyte_pack flyte_pack;

typedef struct {
  char *registration; /* the registration body, JSON; owned */
  int ncommands;
  int has_observe;
} flyte_pack_info;

typedef struct {
  char *body;        /* the result body to post, JSON; owned */
  char event[128];   /* its event name (cut to fit) */
  int fatal;         /* the event is FATAL */
  const char *outcome; /* "success", "fatal", "timeout" or "memory" */
  int state_broken;  /* cut mid-computation or out of memory: the state
                        takes no more actions */
  double seconds;    /* how long the handler ran */
} flyte_pack_result;

/* The sources of the files a state loaded from the pack's directory: the
 * pack file and the modules beside it. Plain C data, shared read-only by
 * the states of one generation. */
typedef struct {
  size_t n;
  char **paths;
  char **texts;
  size_t *lens;
} flyte_sources;

/* Loads and checks the pack file in a new state; with `sources`, the files
 * it names come from there instead of the disk. NULL with a message (file
 * and line where it has them) on failure. */
flyte_pack *flyte_pack_open(const char *path, const flyte_core_env *env,
                            size_t memory_limit, const flyte_sources *sources,
                            char *err, size_t errlen);
void flyte_pack_close(flyte_pack *p);

/* Describes the pack; `labels` (FLYTE_LABELS) win over the pack's own.
 * Returns 0 or -1 with a message. Free info with flyte_pack_info_free. */
int flyte_pack_describe(flyte_pack *p, const flyte_label *labels,
                        size_t nlabels, flyte_pack_info *info, char *err,
                        size_t errlen);
void flyte_pack_info_free(flyte_pack_info *info);

/* Copies what the state loaded from the pack's directory. Returns 0 or -1. */
int flyte_pack_sources(flyte_pack *p, flyte_sources *out);
void flyte_sources_free(flyte_sources *s);

/* An action to run: what flyte_pack_start reads; the caller keeps it (and
 * what it points to) until the task has been finished. */
typedef struct {
  flyte_pack *pack;        /* set by flyte_pack_start */
  const char *id;          /* the action's id, for log lines; may be NULL */
  const char *command;
  json_t *input;           /* NULL when absent */
  const char *input_error; /* why the input could not be read, or NULL */
  double timeout;          /* in: the default; out: the command's */
  double grace;            /* the shutdown grace period, for messages */
} flyte_pack_action;

/* Starts an action as a task of `sched` (attached to the pack's state);
 * `done` runs when it has ended: call flyte_pack_finish there. NULL with a
 * message when it cannot start (out of memory). */
flyte_task *flyte_pack_start(flyte_pack *p, flyte_sched *sched,
                             flyte_pack_action *a, flyte_task_done done,
                             void *ud, char *err, size_t errlen);
/* The result body of an ended action task (the handler's event, or the
 * FATAL the contract describes); frees the task. */
void flyte_pack_finish(flyte_pack_action *a, flyte_task *t,
                       flyte_pack_result *out);
/* The command's timeout, or default_timeout when it sets none. */
double flyte_pack_timeout(flyte_pack *p, const char *command,
                          double default_timeout);
/* The pack's Lua state (for attaching it to a scheduler). */
lua_State *flyte_pack_state(flyte_pack *p);

/* Runs one action and always produces a result body: the handler's event,
 * or the FATAL event the contract describes. `input` is borrowed (NULL when
 * absent); `input_error`, when set, says why the input could not be read.
 * `default_timeout` applies when the command sets none (0: none).
 * `action` (the action's id, or NULL) is added to pack code's log lines. */
void flyte_pack_run(flyte_pack *p, const char *action, const char *command,
                    json_t *input, const char *input_error,
                    double default_timeout, flyte_pack_result *out);

/* Runs every health check, each cut off after `timeout` seconds. Returns
 * the health JSON (caller frees) and sets *healthy. */
char *flyte_pack_health(flyte_pack *p, double timeout, int *healthy);

/* Runs pack.observe until it returns. Returns 0, or -1 with a message. */
int flyte_pack_observe(flyte_pack *p, char *err, size_t errlen);

/* Decodes a result body and re-encodes its event and payload, indented,
 * for a person (flyte-host invoke). Caller frees; NULL on failure. */
char *flyte_pack_pretty_event(flyte_pack *p, const char *body);

/* Pretty-prints any JSON text (flyte-host check). Caller frees. */
char *flyte_pack_pretty(flyte_pack *p, const char *json);

#endif
