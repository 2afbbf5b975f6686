/* outbox.h - what the host owes the flyte-api, on disk.
 *
 * Plain C. Every action taken is written here before its handler runs, and
 * its result before it is sent; every queued event too. An entry goes once
 * the API has it. After a crash the next start delivers what is left: a
 * result or event as it was, an action that never finished as a FATAL.
 * Each running host holds a slot (a subdirectory locked with flock), so
 * several hosts can share one outbox and a restart takes over the slot of
 * a host that died.
 */
#ifndef FLYTE_OUTBOX_H
#define FLYTE_OUTBOX_H

#include <stddef.h>

typedef struct flyte_outbox flyte_outbox;

/* Opens dir (creating it) and takes a free slot. NULL with a message. */
flyte_outbox *flyte_outbox_open(const char *dir, char *err, size_t errlen);
void flyte_outbox_close(flyte_outbox *o);

/* Records an action before its handler runs. Returns its entry (> 0), or
 * -1 with a message (the host goes on without it). Thread-safe. */
long flyte_outbox_taken(flyte_outbox *o, const char *result_url,
                        const char *command, const char *action, char *err,
                        size_t errlen);
/* Records the action's result before it is sent (replacing what was
 * taken). 0 or -1. */
int flyte_outbox_result(flyte_outbox *o, long entry, const char *result_url,
                        const char *command, const char *action,
                        const char *body, size_t len, char *err,
                        size_t errlen);
/* Records a queued event. Returns its entry (> 0) or -1. */
long flyte_outbox_event(flyte_outbox *o, const char *body, size_t len,
                        char *err, size_t errlen);
/* The API has the entry (or refused it for good): forget it. */
void flyte_outbox_done(flyte_outbox *o, long entry);

typedef struct {
  const char *kind;       /* "taken", "result" or "event" */
  const char *result_url; /* taken, result */
  const char *command;    /* taken, result */
  const char *action;     /* taken, result */
  const char *body;       /* result, event */
} flyte_outbox_entry;

/* Calls fn for each entry left by hosts that are gone (this slot's old
 * entries, and unlocked slots), oldest first. fn returns 0 when the entry
 * may go, -1 to keep it for the next start. Corrupt entries are renamed
 * *.corrupt and logged. Returns the number of entries seen. */
int flyte_outbox_recover(flyte_outbox *o,
                         int (*fn)(void *ud, const flyte_outbox_entry *e),
                         void *ud);

#endif
