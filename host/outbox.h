/* outbox.h - what the host owes the flyte-api, on disk: a journal.
 *
 * Plain C, thread-safe. Every action taken is recorded here before its
 * handler runs, and its result before it is sent; every queued event too,
 * and a take intent before each take request. An entry goes once the API
 * has it. After a crash the next start delivers what is left: a result or
 * event as it was, an action that never finished as a FATAL, and it logs
 * (and counts) each take whose reply died with the process.
 *
 * Records are appended to segment files in the host's slot (a subdirectory
 * locked with flock, so several hosts can share one outbox and a restart
 * takes over the slot of a host that died), each framed with its length
 * and a CRC32C. Segments go, oldest first, once every entry in them is
 * done; the few entries that outlive many segments are copied forward
 * (compaction), so disk use stays bounded.
 *
 * Group commit: with sync on, one syncer thread fdatasyncs every record
 * appended since its last sync, from every thread, then publishes the
 * highest sequence number on disk (flyte_outbox_durable) and calls the
 * listeners. With sync off, records are written but never synced: they
 * survive the process dying, not the machine; durable == appended.
 */
#ifndef FLYTE_OUTBOX_H
#define FLYTE_OUTBOX_H

#include <stddef.h>
#include <stdint.h>

typedef struct flyte_outbox flyte_outbox;

/* FLYTE_OUTBOX_SYNC */
enum { FLYTE_OUTBOX_SYNC_OFF = 0, FLYTE_OUTBOX_SYNC_ALWAYS = 1 };

/* Opens dir (creating it), takes a free slot and reads what a host that
 * died left in it (handed out by flyte_outbox_recover). sync is
 * FLYTE_OUTBOX_SYNC_*. NULL with a message. */
flyte_outbox *flyte_outbox_open(const char *dir, int sync, char *err,
                                size_t errlen);
/* Syncs what is left, deletes the segments that are all done, releases
 * the slot. */
void flyte_outbox_close(flyte_outbox *o);

/* ---- appending: returns at once; *seq is the record's sequence number,
 * on disk once flyte_outbox_durable(o) >= *seq. 0, or -1 with a message
 * (nothing was written). The entry of a taken or event record is its
 * sequence number. */

/* An action taken, before its handler runs. intent: the take intent this
 * take answers (cleared by it), or 0. */
int flyte_outbox_append_taken(flyte_outbox *o, uint64_t intent,
                              const char *result_url, const char *command,
                              const char *action, uint64_t *seq, char *err,
                              size_t errlen);
/* The result of entry `entry` (a taken one), before it is posted; it
 * replaces what was taken. */
int flyte_outbox_append_result(flyte_outbox *o, uint64_t entry,
                               const char *result_url, const char *command,
                               const char *action, const char *body,
                               size_t len, uint64_t *seq, char *err,
                               size_t errlen);
/* A queued event. */
int flyte_outbox_append_event(flyte_outbox *o, const char *body, size_t len,
                              uint64_t *seq, char *err, size_t errlen);
/* A take intent, before a take request to take_url: its entry is *seq. The
 * taken record that names it clears it; so does flyte_outbox_done(o, *seq)
 * when the take brought no action (or failed for sure). One left at a
 * crash is logged at the next start as an action that may have been taken
 * and lost. */
int flyte_outbox_append_intent(flyte_outbox *o, const char *take_url,
                               uint64_t *seq, char *err, size_t errlen);

/* Writes (without a sync) the taken records that wait in memory, if any:
 * call it before running code that may take a while and before sleeping.
 * Cheap when none waits. */
void flyte_outbox_flush(flyte_outbox *o);

/* ---- group commit */

/* The highest sequence number on disk (every record up to it is). */
uint64_t flyte_outbox_durable(flyte_outbox *o);
/* The sequence number of the last record appended. */
uint64_t flyte_outbox_appended(flyte_outbox *o);
/* Calls fn(ud) from the syncer thread after each sync that advanced the
 * durable sequence (never with sync off, where a record is durable when
 * its append returns). fn must be quick and must not call the outbox: a
 * loop's thread-safe wake. Up to 64 listeners; 0, or -1 when full. */
int flyte_outbox_on_sync(flyte_outbox *o, void (*fn)(void *ud), void *ud);
/* Blocks until flyte_outbox_durable(o) >= seq. */
void flyte_outbox_wait(flyte_outbox *o, uint64_t seq);

/* ---- blocking forms: each returns once its record is on disk */

/* Records an action before its handler runs. Returns its entry (> 0), or
 * -1 with a message (the host goes on without it). */
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
/* The API has the entry (or refused it for good), or a take intent is
 * answered: forget it. Appends a done record and does not wait for it (a
 * done lost to a machine crash only means a delivery is tried again). */
void flyte_outbox_done(flyte_outbox *o, long entry);

/* ---- recovery */

typedef struct {
  const char *kind;       /* "taken", "result" or "event" */
  const char *result_url; /* taken, result */
  const char *command;    /* taken, result */
  const char *action;     /* taken, result */
  const char *body;       /* result, event */
  uint64_t id;            /* its entry in this host's journal, or 0 */
} flyte_outbox_entry;

/* Calls fn for each entry left by hosts that are gone (this slot's, then
 * each unlocked slot's), oldest first, entries in the old one-file-per-
 * entry format first (they are moved into the journal or removed). fn
 * returns 0 when the entry may go, -1 to keep it for the next start, or 1
 * when it took the entry over: only for an entry with an id (one in this
 * host's journal), which it ends itself with flyte_outbox_done(o, id). A
 * torn or corrupt record is logged and skipped (an old-format file is set
 * aside as *.corrupt). A take intent with no answer is logged as an action
 * that may have been taken and lost, with its time, and counted. Returns
 * the number of entries seen. */
int flyte_outbox_recover(flyte_outbox *o,
                         int (*fn)(void *ud, const flyte_outbox_entry *e),
                         void *ud);
/* Take intents recovery found unanswered, since the outbox was opened. */
long flyte_outbox_lost_takes(flyte_outbox *o);

typedef struct {
  uint64_t records; /* appended since open */
  uint64_t bytes;   /* of those records, framing included */
  uint64_t syncs;   /* fdatasync rounds that advanced the durable sequence */
  long segments;    /* segment files on disk now */
  long entries;     /* entries and take intents not done yet */
  unsigned long write_errors; /* writes and syncs the disk refused */
} flyte_outbox_stats;
void flyte_outbox_stats_get(flyte_outbox *o, flyte_outbox_stats *st);

/* For tests: rotate segments at `bytes` instead of 4 MiB. Call before the
 * first append. */
void flyte_outbox_set_segment_size(flyte_outbox *o, size_t bytes);

/* ---- the journal's format, for tests and the fuzzer ------------------- */

/* A segment: the 16-byte header FLYTE_JOURNAL_HEADER, then records, then
 * zeros (a segment's space is allocated when it is created). A
 * record: magic "FJR1", u32 length of the payload, u32 CRC32C, payload.
 * The payload (little-endian): u8 type, u8 number of strings, u16 0, u64
 * seq, u64 ref, i64 time (microseconds since the epoch), then each string
 * as a u32 length and its bytes. Types t, e and i are copies of an entry's
 * T, E or I record, made by compaction: their ref is the entry. The CRC covers the payload from the ref
 * on, then its first 4 bytes, the seq and the length (so the seq can be
 * set last, under the lock). */
#define FLYTE_JOURNAL_HEADER "flyte-journal 1\n"
#define FLYTE_JOURNAL_HEADER_LEN 16

typedef struct {
  char type;        /* 'T' taken, 'R' result, 'E' event, 'D' done, 'I' intent;
                     * 't', 'e', 'i': copies of T, E, I */
  uint64_t seq;     /* > 0, at most 2^62 (so is ref) */
  uint64_t ref;     /* T: the intent answered (0: none); E, I: 0; others:
                     * the entry */
  int64_t time_us;  /* when it was appended */
  int nstr;         /* T, t: result_url, command, action; R: those and
                     * body; E, e: body; I, i: take_url; D: none */
  const char *str[4]; /* into the scanned bytes: not NUL-terminated */
  size_t len[4];
} flyte_journal_record;

/* Reads one segment held in buf[0..len): rec for each valid record in
 * order (off: where its frame starts), bad for each stretch that is not a
 * valid record (tail: no record follows it, as a write cut short by a
 * crash leaves it). Zero bytes after the last record and after a tail are
 * the space allocated for more records, not reported. Either callback may
 * be NULL. Returns the number of records. */
size_t flyte_journal_scan(const unsigned char *buf, size_t len,
                          void (*rec)(void *ud, const flyte_journal_record *r,
                                      size_t off),
                          void (*bad)(void *ud, size_t off, size_t n,
                                      int tail),
                          void *ud);
/* The framed bytes of r (malloc'ed), *len their length; NULL when r is not
 * a valid record or out of memory. */
unsigned char *flyte_journal_encode(const flyte_journal_record *r,
                                    size_t *len);
/* CRC32C (Castagnoli) of buf, continuing from crc (0 to start): with
 * SSE4.2's crc32 instruction where the CPU has it. */
uint32_t flyte_crc32c(uint32_t crc, const void *buf, size_t len);
/* The same from tables alone (the path of other CPUs), for the tests. */
uint32_t flyte_crc32c_tables(uint32_t crc, const void *buf, size_t len);

#endif
