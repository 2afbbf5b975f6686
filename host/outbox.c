/* outbox.c - what the host owes the flyte-api, on disk: a journal with
 * group commit.
 *
 * Layout: DIR/slot-N/lock (flock'ed by the host using the slot) and
 * DIR/slot-N/journal-<number>.log segments, in the format outbox.h
 * describes. Records take their sequence number and place in the active
 * segment under the outbox's mutex, so the segments hold them in sequence
 * order. With sync on they wait in memory and go out in batches, each one
 * pwrite made without the mutex (a take intent's at once, after the
 * batches before it); the syncer thread writes what is left and makes it
 * durable with one fdatasync per batch of batches (group commit).
 *
 * Entries: a taken, event or intent record starts an entry whose id is its
 * sequence number; a result record joins its entry; a done record (or, for
 * an intent, the taken record that names it) ends it. An entry pins each
 * segment holding one of its records.
 *
 * Deletion keeps one rule that makes it safe at any crash: segments go
 * oldest first, each once nothing pins it. An entry's records all come
 * before its done record, so no order of deletions can leave a record
 * without the done record that ends it. An action that runs for hours
 * would pin everything after it, so when the old segments hold more than
 * twice the bytes of what is still owed (and more than two segments'
 * worth), the syncer copies each owed entry's latest record forward into
 * the active segment (compaction); once those copies are durable, the old
 * segments go. Disk use stays within about twice what is owed plus a few
 * segments, and each byte is copied at most about once on average.
 *
 * The old format (DIR/slot-N/<seq>-<a|e>.json, one file per entry, written
 * by earlier versions) is read once by recovery and removed.
 */
#define _GNU_SOURCE /* memmem */
#include "outbox.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define MAX_SLOTS 256
#define MAX_LISTENERS 64
#define SEGMENT_SIZE ((size_t)4 << 20)
#define FRAME 12                   /* magic, length, CRC */
#define FIXED 28                   /* type, count, 0, seq, ref, time */
#define MAX_PAYLOAD ((size_t)1 << 30)
#define MAX_SEQ ((uint64_t)1 << 62) /* never reached; room to count on */
/* The least time between the starts of two syncs, in seconds, when
 * records keep coming and no thread is blocked waiting. A sync after a
 * quiet moment starts at once; under load, a step waits at most this much
 * more. Measured with echo actions (10 alternating pairs in one run):
 * 0.5 ms kept 70% of the throughput with the outbox off at 1.33 times its
 * CPU per action; 2 ms, 88% at 1.09 (a sync covers four times as many
 * records, and the results it releases go out in fewer, larger bursts);
 * 3 and 4 ms did no better than 2. */
#define SYNC_GAP 0.002
/* With a syncer and sync on, results, events and done records up to this
 * size wait in memory, and the next write (a take intent or a taken
 * record, or the syncer's just before its fdatasync) takes them all in
 * one pwrite; a larger one is written at once. */
#define BEHIND_MAX ((size_t)64 << 10)
/* Batches written at once without the lock, at most (one per thread):
 * more wait for a ticket */
#define TICKETS 4096

static const unsigned char MAGIC[4] = {'F', 'J', 'R', '1'};

/* ---- CRC32C (Castagnoli), slicing by 8 --------------------------------- */

static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    crc_table[0][i] = c;
  }
  for (int t = 1; t < 8; t++)
    for (int i = 0; i < 256; i++)
      crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^
                        crc_table[0][crc_table[t - 1][i] & 0xff];
}

static uint64_t get64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

static uint32_t get32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
         (uint32_t)p[3] << 24;
}

static void put64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++, v >>= 8) p[i] = (unsigned char)v;
}

static void put32(unsigned char *p, uint32_t v) {
  for (int i = 0; i < 4; i++, v >>= 8) p[i] = (unsigned char)v;
}

static uint32_t crc_soft(uint32_t crc, const unsigned char *p, size_t len) {
  while (len >= 8) {
    uint64_t w = get64(p) ^ crc;
    crc = crc_table[7][w & 0xff] ^ crc_table[6][(w >> 8) & 0xff] ^
          crc_table[5][(w >> 16) & 0xff] ^ crc_table[4][(w >> 24) & 0xff] ^
          crc_table[3][(w >> 32) & 0xff] ^ crc_table[2][(w >> 40) & 0xff] ^
          crc_table[1][(w >> 48) & 0xff] ^ crc_table[0][w >> 56];
    p += 8;
    len -= 8;
  }
  while (len--) crc = crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
  return crc;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
/* SSE4.2's crc32 instruction computes the same CRC32C, 8 bytes a cycle or
 * so: about a tenth of the tables' time on a journal record. */
__attribute__((target("sse4.2"))) static uint32_t
crc_sse42(uint32_t crc, const unsigned char *p, size_t len) {
  uint64_t c = crc;
  while (len >= 8) {
    uint64_t w; /* x86 is little-endian: the word as it lies */
    memcpy(&w, p, 8);
    c = __builtin_ia32_crc32di(c, w);
    p += 8;
    len -= 8;
  }
  crc = (uint32_t)c;
  while (len--) crc = __builtin_ia32_crc32qi(crc, *p++);
  return crc;
}
#endif

static uint32_t (*crc_fn)(uint32_t, const unsigned char *, size_t) = crc_soft;

static void crc_pick(void) {
  crc_init();
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  if (__builtin_cpu_supports("sse4.2")) crc_fn = crc_sse42;
#endif
}

uint32_t flyte_crc32c(uint32_t crc, const void *buf, size_t len) {
  pthread_once(&crc_once, crc_pick);
  return ~crc_fn(~crc, buf, len);
}

uint32_t flyte_crc32c_tables(uint32_t crc, const void *buf, size_t len) {
  pthread_once(&crc_once, crc_pick);
  return ~crc_soft(~crc, buf, len);
}

/* ---- records ------------------------------------------------------------- */

/* t, e and i are copies (compaction) of T, E and I: the entry is ref. */
static int strings_of(char type) {
  switch (type) {
  case 'T': case 't': return 3;
  case 'R': return 4;
  case 'E': case 'e': return 1;
  case 'I': case 'i': return 1;
  case 'D': return 0;
  default: return -1;
  }
}

/* The rules a record's fixed fields follow (the same both ways). */
static int fields_valid(char type, int nstr, uint64_t seq, uint64_t ref) {
  if (strings_of(type) != nstr || seq == 0 || seq > MAX_SEQ || ref > MAX_SEQ)
    return 0;
  if ((type == 'E' || type == 'I') && ref != 0) return 0;
  if (type != 'T' && type != 'E' && type != 'I' && ref == 0) return 0;
  return 1;
}

static size_t record_size(const flyte_journal_record *r) {
  size_t n = FRAME + FIXED;
  for (int i = 0; i < r->nstr; i++) n += 4 + r->len[i];
  return n;
}

/* A record framed, its sequence number not yet set: crc covers the
 * payload from the ref on, then its first 4 bytes. */
typedef struct {
  unsigned char *buf;
  size_t len;
  uint32_t crc;
} framed;

static int frame_build(framed *f, char type, uint64_t ref, int64_t time_us,
                       int nstr, const char *const *str, const size_t *len) {
  size_t payload = FIXED;
  for (int i = 0; i < nstr; i++) {
    if (len[i] > MAX_PAYLOAD) return -1;
    payload += 4 + len[i];
  }
  if (payload > MAX_PAYLOAD) return -1;
  unsigned char *b = malloc(FRAME + payload);
  if (b == NULL) return -1;
  memcpy(b, MAGIC, 4);
  put32(b + 4, (uint32_t)payload);
  unsigned char *p = b + FRAME;
  p[0] = (unsigned char)type;
  p[1] = (unsigned char)nstr;
  p[2] = p[3] = 0;
  put64(p + 4, 0);
  put64(p + 12, ref);
  put64(p + 20, (uint64_t)time_us);
  size_t q = FIXED;
  for (int i = 0; i < nstr; i++) {
    put32(p + q, (uint32_t)len[i]);
    if (len[i]) memcpy(p + q + 4, str[i], len[i]);
    q += 4 + len[i];
  }
  f->buf = b;
  f->len = FRAME + payload;
  f->crc = flyte_crc32c(flyte_crc32c(0, p + 12, payload - 12), p, 4);
  return 0;
}

/* Sets the sequence number and the CRC. */
static void frame_seal(framed *f, uint64_t seq) {
  unsigned char *p = f->buf + FRAME;
  put64(p + 4, seq);
  uint32_t crc = flyte_crc32c(f->crc, p + 4, 8);
  put32(f->buf + 8, flyte_crc32c(crc, f->buf + 4, 4));
}

unsigned char *flyte_journal_encode(const flyte_journal_record *r,
                                    size_t *len) {
  if (!fields_valid(r->type, r->nstr, r->seq, r->ref)) return NULL;
  framed f;
  if (frame_build(&f, r->type, r->ref, r->time_us, r->nstr, r->str, r->len) !=
      0)
    return NULL;
  frame_seal(&f, r->seq);
  *len = f.len;
  return f.buf;
}

/* 1 when buf[off..len) starts with a valid record: fills r and *size. */
static int decode_at(const unsigned char *buf, size_t len, size_t off,
                     flyte_journal_record *r, size_t *size) {
  if (len - off < FRAME + FIXED) return 0;
  const unsigned char *h = buf + off, *p = h + FRAME;
  if (memcmp(h, MAGIC, 4) != 0) return 0;
  size_t payload = get32(h + 4);
  if (payload < FIXED || payload > len - off - FRAME) return 0;
  r->type = (char)p[0];
  r->nstr = p[1];
  r->seq = get64(p + 4);
  r->ref = get64(p + 12);
  r->time_us = (int64_t)get64(p + 20);
  if (p[2] || p[3] || !fields_valid(r->type, r->nstr, r->seq, r->ref))
    return 0;
  size_t q = FIXED;
  for (int i = 0; i < r->nstr; i++) {
    if (payload - q < 4) return 0;
    size_t n = get32(p + q);
    q += 4;
    if (n > payload - q) return 0;
    r->str[i] = (const char *)p + q;
    r->len[i] = n;
    q += n;
  }
  if (q != payload) return 0;
  uint32_t crc = flyte_crc32c(0, p + 12, payload - 12);
  crc = flyte_crc32c(crc, p, 4);
  crc = flyte_crc32c(crc, p + 4, 8);
  if (flyte_crc32c(crc, h + 4, 4) != get32(h + 8)) return 0;
  for (int i = r->nstr; i < 4; i++) {
    r->str[i] = NULL;
    r->len[i] = 0;
  }
  *size = FRAME + payload;
  return 1;
}

size_t flyte_journal_scan(const unsigned char *buf, size_t len,
                          void (*rec)(void *ud, const flyte_journal_record *r,
                                      size_t off),
                          void (*bad)(void *ud, size_t off, size_t n,
                                      int tail),
                          void *ud) {
  size_t off = 0, count = 0, size;
  flyte_journal_record r;
  if (len >= FLYTE_JOURNAL_HEADER_LEN &&
      memcmp(buf, FLYTE_JOURNAL_HEADER, FLYTE_JOURNAL_HEADER_LEN) == 0)
    off = FLYTE_JOURNAL_HEADER_LEN;
  while (off < len) {
    if (decode_at(buf, len, off, &r, &size)) {
      if (rec) rec(ud, &r, off);
      count++;
      off += size;
      continue;
    }
    /* not a record: skip to the next place where one starts */
    size_t next = off + 1;
    while (next < len) {
      const unsigned char *m = memmem(buf + next, len - next, MAGIC, 4);
      if (m == NULL) {
        next = len;
        break;
      }
      next = (size_t)(m - buf);
      if (decode_at(buf, len, next, &r, &size)) break;
      next++;
    }
    if (next == len) { /* the end: zeros past the last record are the
                        * space allocated for more, not a torn record */
      size_t end = len;
      while (end > off && buf[end - 1] == 0) end--;
      if (end > off && bad) bad(ud, off, end - off, 1);
      break;
    }
    if (bad) bad(ud, off, next - off, 0);
    off = next;
  }
  return count;
}

/* ---- the journal's state --------------------------------------------------- */

typedef struct segment segment;

struct segment {
  segment *prev, *next; /* by number */
  uint64_t num;
  int fd;        /* while it is the active one; then the syncer closes it */
  uint64_t size; /* bytes in it: where the next record goes */
  uint64_t allocated; /* bytes allocated at creation (zeros past size) */
  long live;     /* entries with a record here, not done */
  int doomed;    /* to be deleted (the doomed ones are the oldest) */
  int failed;    /* its deletion failed: left alone */
  uint64_t doom_seq; /* deleted once this sequence is durable */
};

typedef struct {
  uint64_t id;
  char kind; /* 'T', 'R', 'E', 'I': what its latest record says */
  int nsegs, csegs;
  segment **segs, *inl[2]; /* the segments it pins */
  segment *last;           /* where its latest record is, which says all */
  uint64_t last_off;
  size_t last_len;
  /* recovered entries only: what the records said, NUL-terminated */
  char *data;
  const char *f[4]; /* T, R: url, command, action (R: body); E: body;
                     * I: take url */
  int64_t time_us;
} jentry;

/* id -> entry: open addressing, linear probing, backward-shift delete */
typedef struct {
  jentry **e;
  size_t cap, n;
} table;

static size_t bucket(uint64_t id, size_t cap) {
  uint64_t h = id * 0x9E3779B97F4A7C15ull;
  return (size_t)(h ^ (h >> 29)) & (cap - 1);
}

static jentry *tget(const table *t, uint64_t id) {
  if (t->cap == 0) return NULL;
  for (size_t i = bucket(id, t->cap);; i = (i + 1) & (t->cap - 1)) {
    if (t->e[i] == NULL) return NULL;
    if (t->e[i]->id == id) return t->e[i];
  }
}

static int tput(table *t, jentry *e) {
  if ((t->n + 1) * 2 > t->cap) {
    size_t cap = t->cap ? t->cap * 2 : 64;
    jentry **grown = calloc(cap, sizeof *grown);
    if (grown == NULL) return -1;
    for (size_t k = 0; k < t->cap; k++) {
      if (t->e[k] == NULL) continue;
      size_t i = bucket(t->e[k]->id, cap);
      while (grown[i]) i = (i + 1) & (cap - 1);
      grown[i] = t->e[k];
    }
    free(t->e);
    t->e = grown;
    t->cap = cap;
  }
  size_t i = bucket(e->id, t->cap);
  while (t->e[i]) i = (i + 1) & (t->cap - 1);
  t->e[i] = e;
  t->n++;
  return 0;
}

static void tdel(table *t, uint64_t id) {
  if (t->cap == 0) return;
  size_t mask = t->cap - 1, i = bucket(id, t->cap);
  while (t->e[i] && t->e[i]->id != id) i = (i + 1) & mask;
  if (t->e[i] == NULL) return;
  t->e[i] = NULL;
  t->n--;
  for (size_t k = (i + 1) & mask; t->e[k]; k = (k + 1) & mask) {
    size_t home = bucket(t->e[k]->id, t->cap);
    /* move it into the hole unless its home lies in (i, k] */
    int stays = i <= k ? (home > i && home <= k) : (home > i || home <= k);
    if (!stays) {
      t->e[i] = t->e[k];
      t->e[k] = NULL;
      i = k;
    }
  }
}

typedef struct {
  char *slot; /* DIR/slot-N */
  int lock_fd, dir_fd;
  int sync;
  size_t segment_size;
  segment *first, *last, *active;
  long nsegments;
  uint64_t seq;        /* the last one given */
  uint64_t next_seg;   /* the next segment's number */
  uint64_t live_bytes; /* of the latest record of each entry not done */
  table entries;
  int replaying;    /* nothing is deleted while segments are read */
  int frozen;       /* an entry or a segment could not be tracked (out of
                     * memory, a segment unreadable): delete nothing */
  int want_compact; /* a segment was retired: see whether to compact */
  /* for the syncer */
  int *retired; /* fds of segments no longer active: sync, then close */
  size_t nretired, cretired;
  int dir_dirty; /* a segment was created: fsync the directory */
  uint64_t *recovered; /* ids of the entries read at open, in order */
  size_t nrecovered;
  /* write-behind (the syncer's journal, sync on): the records appended
   * since a writer last took them, in order, bound for the active segment
   * at pend_off. A result, event or done record guards a step that waits
   * for the fdatasync anyway; a taken record, one that waits for the
   * worker's next intent or flush. So a take intent's pwrite carries what
   * waits, and the syncer's the rest: about one pwrite per action, not
   * one per record. */
  int behind;
  atomic_int urgent; /* a taken record waits: flyte_outbox_flush writes it */
  /* writes of what waited, made without the lock, each with a ticket in
   * the order the batches were taken: every ticket below written_upto is
   * written. A take intent's write waits for those before it (a taken
   * record ahead of it must not land after it); a sync waits for them
   * before its fdatasync, and compaction for all */
  uint64_t ticket_next, written_upto;
  unsigned char ticket_done[TICKETS];
  unsigned char *pend;
  size_t npend, cpend;
  /* buffers written out, kept for the next batches: a writer takes the
   * batch with its buffer, and a fresh 4 KiB malloc per write made glibc
   * consolidate its fast bins each time */
  unsigned char *spare[4];
  size_t cspare[4];
  int nspare;
  uint64_t pend_off;
  int write_failed; /* said once, until a write succeeds again */
  unsigned long write_errors; /* writes and syncs that failed */
} journal;

static char *path_join(const char *a, const char *b) {
  size_t n = strlen(a) + strlen(b) + 2;
  char *p = malloc(n);
  if (p) snprintf(p, n, "%s/%s", a, b);
  return p;
}

static void segment_name(char *buf, size_t n, uint64_t num) {
  snprintf(buf, n, "journal-%010" PRIu64 ".log", num);
}

static double now_mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int grow(void **arr, size_t *cap, size_t n, size_t size) {
  if (n < *cap) return 0;
  size_t c = *cap ? *cap * 2 : 8;
  void *p = realloc(*arr, c * size);
  if (p == NULL) return -1;
  *arr = p;
  *cap = c;
  return 0;
}

/* Dooms the oldest segments that nothing pins, up to the active one. */
static int trim(journal *j) {
  int doomed = 0;
  if (j->replaying || j->frozen) return 0;
  for (segment *s = j->first; s && s != j->active; s = s->next) {
    if (s->doomed) continue;
    if (s->live) break;
    s->doomed = 1;
    s->doom_seq = j->seq;
    doomed = 1;
  }
  return doomed;
}

static int pin(jentry *e, segment *s) {
  for (int i = 0; i < e->nsegs; i++)
    if (e->segs[i] == s) return 0;
  if (e->nsegs == e->csegs) {
    int c = e->csegs * 2;
    segment **grown = malloc((size_t)c * sizeof *grown);
    if (grown == NULL) return -1; /* s is not pinned: e stays in memory */
    memcpy(grown, e->segs, (size_t)e->nsegs * sizeof *grown);
    if (e->segs != e->inl) free(e->segs);
    e->segs = grown;
    e->csegs = c;
  }
  e->segs[e->nsegs++] = s;
  s->live++;
  return 0;
}

/* e's latest record, the one that says all about it, is at s/off. */
static void set_last(journal *j, jentry *e, segment *s, uint64_t off,
                     size_t len) {
  j->live_bytes -= e->last ? e->last_len : 0;
  j->live_bytes += len;
  e->last = s;
  e->last_off = off;
  e->last_len = len;
}

static void entry_free(jentry *e) {
  if (e->segs != e->inl) free(e->segs);
  free(e->data);
  free(e);
}

static void entry_done(journal *j, jentry *e) {
  for (int i = 0; i < e->nsegs; i++) e->segs[i]->live--;
  j->live_bytes -= e->last ? e->last_len : 0;
  tdel(&j->entries, e->id);
  entry_free(e);
  trim(j);
}

/* Keeps the fields of a recovered record with its entry. */
static void keep_fields(jentry *e, const flyte_journal_record *r) {
  size_t total = 0;
  for (int i = 0; i < r->nstr; i++) total += r->len[i] + 1;
  char *data = malloc(total ? total : 1);
  if (data == NULL) return; /* handed out as a FATAL with "?" fields */
  free(e->data);
  e->data = data;
  memset(e->f, 0, sizeof e->f);
  for (int i = 0; i < r->nstr; i++) {
    memcpy(data, r->str[i], r->len[i]);
    data[r->len[i]] = '\0';
    e->f[i] = data;
    data += r->len[i] + 1;
  }
  e->time_us = r->time_us;
}

static jentry *entry_get(journal *j, uint64_t id, char kind) {
  jentry *e = tget(&j->entries, id);
  if (e == NULL) {
    if ((e = calloc(1, sizeof *e)) == NULL) return NULL;
    e->id = id;
    e->segs = e->inl;
    e->csegs = 2;
    if (tput(&j->entries, e) != 0) {
      free(e);
      return NULL;
    }
  }
  e->kind = kind;
  return e;
}

/* What a record at s/off, size bytes framed, does to the entries. keep:
 * hold its fields (recovery). -1 when out of memory (then nothing is
 * deleted any more: the entry's records must stay). */
static int apply(journal *j, segment *s, uint64_t off, size_t size,
                 const flyte_journal_record *r, int keep) {
  jentry *e;
  uint64_t id = r->type == 'T' || r->type == 'E' || r->type == 'I' ? r->seq
                                                                   : r->ref;
  if (r->seq > j->seq) j->seq = r->seq;
  if (r->type == 'D') {
    if ((e = tget(&j->entries, r->ref)) != NULL) entry_done(j, e);
    return 0;
  }
  if (id > j->seq) j->seq = id;
  char kind = r->type == 't' ? 'T' : r->type == 'e' ? 'E'
              : r->type == 'i' ? 'I' : r->type;
  if ((e = entry_get(j, id, kind)) == NULL || pin(e, s) != 0) {
    j->frozen = 1;
    return -1;
  }
  set_last(j, e, s, off, size);
  if (keep) keep_fields(e, r);
  if (r->type == 'T' && r->ref && r->ref != r->seq) {
    jentry *x = tget(&j->entries, r->ref);
    if (x && x->kind == 'I') entry_done(j, x);
  }
  return 0;
}

static segment *segment_add(journal *j, uint64_t num) {
  segment *s = calloc(1, sizeof *s);
  if (s == NULL) return NULL;
  s->num = num;
  s->fd = -1;
  segment *after = j->last;
  while (after && after->num > num) after = after->prev;
  s->prev = after;
  s->next = after ? after->next : j->first;
  if (s->next)
    s->next->prev = s;
  else
    j->last = s;
  if (after)
    after->next = s;
  else
    j->first = s;
  j->nsegments++;
  if (num >= j->next_seg) j->next_seg = num + 1;
  return s;
}

static void segment_unlink(journal *j, segment *s) {
  if (s->prev)
    s->prev->next = s->next;
  else
    j->first = s->next;
  if (s->next)
    s->next->prev = s->prev;
  else
    j->last = s->prev;
  j->nsegments--;
  free(s);
}

/* Writes all of buf at off. */
static int write_at(int fd, const void *buf, size_t len, uint64_t off) {
  const char *p = buf;
  while (len) {
    ssize_t w = pwrite(fd, p, len, (off_t)off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      if (w == 0) errno = EIO;
      return -1;
    }
    p += w;
    len -= (size_t)w;
    off += (uint64_t)w;
  }
  return 0;
}

/* A write cut short: what it added to the file goes; inside the space
 * allocated at creation, the next record is written over it. */
static void undo_write(segment *a) {
  off_t keep = (off_t)(a->size > a->allocated ? a->size : a->allocated);
  if (ftruncate(a->fd, keep) != 0) return; /* the reader skips it */
}

/* Says that a write of the journal failed: once, until one succeeds. */
static void write_failed(journal *j, uint64_t num, int e) {
  j->write_errors++;
  if (j->write_failed) return;
  j->write_failed = 1;
  char name[48];
  segment_name(name, sizeof name, num);
  flyte_error("outbox: cannot write to %s/%s: %s; records may be lost if "
              "the host stops before they are delivered",
              j->slot, name, strerror(e));
}

/* After a writer took the buffer of what waits: a kept one for what comes
 * next. */
static void pend_renew(journal *j) {
  j->npend = 0;
  if (j->nspare > 0) {
    j->nspare--;
    j->pend = j->spare[j->nspare];
    j->cpend = j->cspare[j->nspare];
  } else {
    j->pend = NULL;
    j->cpend = 0;
  }
}

/* A buffer written out: kept for a next batch, or freed. */
static void spare_keep(journal *j, unsigned char *buf, size_t cap) {
  if (buf == NULL) return;
  if (j->nspare < 4) {
    j->spare[j->nspare] = buf;
    j->cspare[j->nspare] = cap;
    j->nspare++;
  } else {
    free(buf);
  }
}

/* Writes what waits in memory to the active segment, under the lock:
 * before the segment is retired, compacted into or closed, and before a
 * record too large to wait. A failed write leaves a gap that the reader
 * skips; the records stay owed in memory and are delivered as usual. */
static void flush_pending(journal *j) {
  segment *a = j->active;
  atomic_store(&j->urgent, 0);
  if (j->npend == 0 || a == NULL) return;
  if (write_at(a->fd, j->pend, j->npend, j->pend_off) != 0)
    write_failed(j, a->num, errno);
  else
    j->write_failed = 0;
  j->npend = 0;
}

/* Keeps f (sealed) in memory to be written at off; -1 when there is no
 * room (then the caller writes it itself). */
static int pend_frame(journal *j, const framed *f, uint64_t off) {
  if (j->npend + f->len > j->cpend) {
    size_t cap = j->cpend ? j->cpend : 4096;
    while (cap < j->npend + f->len) cap *= 2;
    unsigned char *grown = realloc(j->pend, cap);
    if (grown == NULL) return -1;
    j->pend = grown;
    j->cpend = cap;
  }
  if (j->npend == 0) j->pend_off = off;
  memcpy(j->pend + j->npend, f->buf, f->len);
  j->npend += f->len;
  return 0;
}

/* A new active segment; the old one goes to the syncer. */
static int rotate(journal *j, char *err, size_t errlen) {
  flush_pending(j);
  if (grow((void **)&j->retired, &j->cretired, j->nretired,
           sizeof *j->retired) != 0) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  for (int tries = 0;; tries++) {
    char name[48];
    segment_name(name, sizeof name, j->next_seg);
    int fd = openat(j->dir_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
                    0600);
    if (fd < 0 && errno == EEXIST && tries < 100) {
      j->next_seg++;
      continue;
    }
    segment *s = NULL;
    if (fd < 0 ||
        write_at(fd, FLYTE_JOURNAL_HEADER, FLYTE_JOURNAL_HEADER_LEN, 0) != 0 ||
        (s = segment_add(j, j->next_seg)) == NULL) {
      snprintf(err, errlen, "cannot create %s/%s: %s", j->slot, name,
               fd < 0 || s == NULL ? strerror(errno) : "out of memory");
      if (fd >= 0) {
        close(fd);
        unlinkat(j->dir_fd, name, 0);
      }
      return -1;
    }
    s->fd = fd;
    s->size = FLYTE_JOURNAL_HEADER_LEN;
    /* Allocated at once: an fdatasync then writes the records alone, not
     * the file's size as well (a third less time and CPU a sync on ext4).
     * Where the file system cannot, the file grows as it is written. */
    if (fallocate(fd, 0, 0, (off_t)j->segment_size) == 0)
      s->allocated = j->segment_size;
    segment *old = j->active;
    j->active = s;
    j->dir_dirty = 1;
    if (old) {
      j->retired[j->nretired++] = old->fd;
      old->fd = -1;
      trim(j);
      j->want_compact = 1;
    }
    return 0;
  }
}

/* Writes a built frame as the next record and applies it. The caller
 * holds the lock (or owns the journal). */
static int journal_write(journal *j, framed *f, char type, uint64_t ref,
                         uint64_t *seq, char *err, size_t errlen) {
  if (j->active == NULL && rotate(j, err, errlen) != 0) return -1;
  segment *a = j->active;
  uint64_t s = j->seq + 1;
  frame_seal(f, s);
  int pending = j->behind && f->len <= BEHIND_MAX &&
                pend_frame(j, f, a->size) == 0;
  /* A take intent is written at once, with whatever waits: it must
   * survive the process being killed right after the take request is
   * sent, which no fdatasync guards. A taken record must too, but the
   * take's intent stands for it meanwhile: it waits for the next intent
   * (the worker's next take) or flyte_outbox_flush (before the worker
   * runs pack code or sleeps), so that when the queue is hot one pwrite
   * takes both. The others guard steps that wait for the sync. */
  if (!pending)
    flush_pending(j);
  else if (type == 'T' || type == 'I')
    atomic_store(&j->urgent, 1); /* the caller writes an intent at once */
  if (!pending && write_at(a->fd, f->buf, f->len, a->size) != 0) {
    int e = errno;
    char name[48];
    segment_name(name, sizeof name, a->num);
    snprintf(err, errlen, "cannot write to %s/%s: %s", j->slot, name,
             strerror(e));
    undo_write(a);
    j->write_errors++;
    return -1;
  }
  uint64_t off = a->size;
  a->size += f->len;
  j->seq = s;
  flyte_journal_record r = {type, s, ref, 0, 0, {0}, {0}};
  if (apply(j, a, off, f->len, &r, 0) != 0)
    flyte_error("outbox: out of memory: no segment of %s is deleted until "
                "the next start", j->slot);
  *seq = s;
  if (a->size >= j->segment_size) {
    char why[300];
    if (rotate(j, why, sizeof why) != 0)
      flyte_error("outbox: %s; writing on to the full segment", why);
  }
  return 0;
}

/* Moves e's pins to the active segment alone. */
static void rebase(journal *j, jentry *e) {
  segment *a = j->active;
  int has = 0;
  for (int i = 0; i < e->nsegs; i++) {
    if (e->segs[i] == a)
      has = 1;
    else
      e->segs[i]->live--;
  }
  e->nsegs = 1;
  e->segs[0] = a;
  if (!has) a->live++;
}

/* Compaction: when the old segments hold more than twice what is owed
 * (and more than two segments' worth), copies each owed entry's latest
 * record into the active segment, so that the old segments can go (once
 * the copies are durable: trim dooms them at the current sequence). Under
 * the lock. */
static void compact(journal *j) {
  segment *a = j->active;
  uint64_t old = 0;
  flush_pending(j);
  for (segment *s = j->first; s; s = s->next)
    if (s != a && !s->doomed) old += s->size;
  if (a == NULL || old < 2 * (uint64_t)j->segment_size ||
      old <= 2 * j->live_bytes)
    return;
  int fd = -1;
  segment *fd_of = NULL;
  unsigned char *buf = NULL;
  size_t cap = 0;
  long moved = 0, failed = 0;
  for (size_t k = 0; k < j->entries.cap; k++) {
    jentry *e = j->entries.e[k];
    if (e == NULL || (e->nsegs == 1 && e->segs[0] == a)) continue;
    if (e->last == a) { /* its latest record is here already */
      rebase(j, e);
      continue;
    }
    if (e->last != fd_of) {
      char name[48];
      if (fd >= 0) close(fd);
      segment_name(name, sizeof name, e->last->num);
      fd = openat(j->dir_fd, name, O_RDONLY | O_CLOEXEC);
      fd_of = e->last;
    }
    if (e->last_len > cap) {
      unsigned char *grown = realloc(buf, e->last_len);
      if (grown == NULL) {
        failed++;
        continue;
      }
      buf = grown;
      cap = e->last_len;
    }
    flyte_journal_record r;
    size_t size;
    framed f;
    if (fd < 0 ||
        pread(fd, buf, e->last_len, (off_t)e->last_off) !=
            (ssize_t)e->last_len ||
        !decode_at(buf, e->last_len, 0, &r, &size) || size != e->last_len) {
      failed++;
      continue;
    }
    char type = r.type == 'T' || r.type == 't' ? 't'
                : r.type == 'E' || r.type == 'e' ? 'e'
                : r.type == 'I' || r.type == 'i' ? 'i'
                                                 : 'R';
    if (frame_build(&f, type, e->id, r.time_us, r.nstr, r.str, r.len) != 0) {
      failed++;
      continue;
    }
    frame_seal(&f, j->seq + 1);
    if (write_at(a->fd, f.buf, f.len, a->size) != 0) {
      undo_write(a);
      free(f.buf);
      failed++;
      break;
    }
    j->seq++;
    rebase(j, e);
    set_last(j, e, a, a->size, f.len);
    a->size += f.len;
    free(f.buf);
    moved++;
  }
  if (fd >= 0) close(fd);
  free(buf);
  trim(j);
  flyte_debug("outbox: compacted %s: %ld entr%s copied forward from %" PRIu64
              " bytes of old segments",
              j->slot, moved, moved == 1 ? "y" : "ies", old);
  if (failed)
    flyte_error("outbox: %ld entr%s of %s could not be copied forward; "
                "the old segments holding them stay",
                failed, failed == 1 ? "y" : "ies", j->slot);
}

/* Deletes the doomed segments, oldest first, up to those doomed at
 * sequence `upto`. mu: released around the file system calls, when given.
 * Only one thread deletes. */
static void delete_doomed(journal *j, pthread_mutex_t *mu, uint64_t upto) {
  segment *s;
  while ((s = j->first) && s->doomed && !s->failed && s->doom_seq <= upto) {
    char name[48];
    segment_name(name, sizeof name, s->num);
    if (mu) pthread_mutex_unlock(mu);
    int rc = unlinkat(j->dir_fd, name, 0);
    int e = errno;
    /* durable before any newer one goes */
    if (rc == 0 && j->sync) fsync(j->dir_fd);
    if (mu) pthread_mutex_lock(mu);
    if (rc != 0 && e != ENOENT) {
      flyte_error("outbox: cannot delete %s/%s: %s; it and the newer "
                  "segments stay", j->slot, name, strerror(e));
      s->failed = 1;
      return;
    }
    segment_unlink(j, s);
  }
}

/* For a journal with no syncer thread: syncs and closes the retired fds,
 * syncs the directory and the active segment. */
static void flush_inline(journal *j) {
  flush_pending(j);
  for (size_t i = 0; i < j->nretired; i++) {
    if (j->sync) fdatasync(j->retired[i]);
    close(j->retired[i]);
  }
  j->nretired = 0;
  if (j->sync && j->dir_dirty) fsync(j->dir_fd);
  j->dir_dirty = 0;
  if (j->sync && j->active) fdatasync(j->active->fd);
}

/* ---- reading a slot's journal ----------------------------------------------- */

typedef struct {
  journal *j;
  segment *s;
  const char *path;
} replay_ctx;

static void replay_rec(void *ud, const flyte_journal_record *r, size_t off) {
  replay_ctx *c = ud;
  c->s->size = off + record_size(r); /* what counts of it */
  if (apply(c->j, c->s, off, record_size(r), r, 1) != 0)
    flyte_error("outbox: out of memory reading %s", c->path);
}

static void replay_bad(void *ud, size_t off, size_t n, int tail) {
  replay_ctx *c = ud;
  if (tail)
    flyte_warn("outbox: %s: the last %zu bytes (from offset %zu) are not a "
               "whole record, as a crash in the middle of a write leaves "
               "them; skipped",
               c->path, n, off);
  else
    flyte_error("outbox: %s: %zu bytes at offset %zu are not a valid record "
                "(corrupt); skipped",
                c->path, n, off);
}

static int compare_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static unsigned char *read_whole(int fd, size_t *len) {
  struct stat st;
  if (fstat(fd, &st) != 0) return NULL;
  size_t cap = (size_t)st.st_size + 1, n = 0;
  unsigned char *buf = malloc(cap);
  while (buf) {
    if (n == cap) {
      unsigned char *grown = realloc(buf, cap *= 2);
      if (grown == NULL) break;
      buf = grown;
    }
    ssize_t r = read(fd, buf + n, cap - n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) break;
    if (r == 0) {
      *len = n;
      return buf;
    }
    n += (size_t)r;
  }
  free(buf);
  return NULL;
}

/* Reads the segments of j->slot, oldest first, and deletes those all done.
 * Keeps the ids of the entries left in j->recovered. */
static void journal_load(journal *j) {
  DIR *d = opendir(j->slot);
  struct dirent *de;
  uint64_t *nums = NULL;
  size_t n = 0, cap = 0;
  while (d && (de = readdir(d)) != NULL) {
    uint64_t num;
    int used = 0;
    if (sscanf(de->d_name, "journal-%" SCNu64 ".log%n", &num, &used) == 1 &&
        used > 0 && de->d_name[used] == '\0' &&
        grow((void **)&nums, &cap, n, sizeof *nums) == 0)
      nums[n++] = num;
  }
  if (d) closedir(d);
  if (n) qsort(nums, n, sizeof *nums, compare_u64);
  j->replaying = 1;
  for (size_t i = 0; i < n; i++) {
    char name[48];
    segment_name(name, sizeof name, nums[i]);
    char *path = path_join(j->slot, name);
    int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    size_t len = 0;
    unsigned char *buf = fd >= 0 ? read_whole(fd, &len) : NULL;
    if (fd >= 0) close(fd);
    if (nums[i] >= j->next_seg) j->next_seg = nums[i] + 1;
    segment *s = buf ? segment_add(j, nums[i]) : NULL;
    if (s == NULL) {
      /* left alone, never deleted: the next start reads it again */
      flyte_error("outbox: cannot read %s: %s; left as it is",
                  path ? path : name, buf ? "out of memory" : strerror(errno));
      j->frozen = 1;
    } else {
      s->size = len < FLYTE_JOURNAL_HEADER_LEN ? len
                                               : FLYTE_JOURNAL_HEADER_LEN;
      replay_ctx c = {j, s, path};
      flyte_journal_scan(buf, len, replay_rec, replay_bad, &c);
    }
    free(buf);
    free(path);
  }
  free(nums);
  j->replaying = 0;
  if (j->entries.n &&
      (j->recovered = malloc(j->entries.n * sizeof *j->recovered))) {
    for (size_t k = 0; k < j->entries.cap; k++)
      if (j->entries.e[k]) j->recovered[j->nrecovered++] = j->entries.e[k]->id;
    qsort(j->recovered, j->nrecovered, sizeof *j->recovered, compare_u64);
  } else if (j->entries.n) {
    j->frozen = 1;
  }
  trim(j);
  delete_doomed(j, NULL, UINT64_MAX);
}

/* Tries to lock DIR/slot-N/lock without waiting. Returns the fd or -1. */
static int lock_slot(const char *slot) {
  char *lock = path_join(slot, "lock");
  if (lock == NULL) return -1;
  int fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  free(lock);
  if (fd < 0) return -1;
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* A journal over a slot this process has locked (lock_fd). Reads it. */
static journal *journal_open(const char *slot, int lock_fd, int sync,
                             char *err, size_t errlen) {
  journal *j = calloc(1, sizeof *j);
  if (j == NULL || (j->slot = strdup(slot)) == NULL) {
    free(j);
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  j->lock_fd = lock_fd;
  j->sync = sync;
  j->segment_size = SEGMENT_SIZE;
  j->next_seg = 1;
  j->dir_fd = open(slot, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (j->dir_fd < 0) {
    snprintf(err, errlen, "cannot open %s: %s", slot, strerror(errno));
    free(j->slot);
    free(j);
    return NULL;
  }
  journal_load(j);
  return j;
}

/* Closes the journal: what is left synced, the active segment deleted
 * when it is all done. The retired fds must be closed already (or are
 * closed here). Does not close lock_fd. */
static void journal_close(journal *j) {
  if (j == NULL) return;
  flush_inline(j);
  segment *a = j->active;
  if (a) {
    close(a->fd);
    a->fd = -1;
    j->active = NULL;
  }
  trim(j);
  delete_doomed(j, NULL, UINT64_MAX);
  for (size_t k = 0; k < j->entries.cap; k++)
    if (j->entries.e[k]) entry_free(j->entries.e[k]);
  free(j->entries.e);
  while (j->first) segment_unlink(j, j->first);
  if (j->dir_fd >= 0) close(j->dir_fd);
  free(j->retired);
  free(j->pend);
  for (int i = 0; i < j->nspare; i++) free(j->spare[i]);
  free(j->recovered);
  free(j->slot);
  free(j);
}

/* ---- the outbox ------------------------------------------------------------ */

typedef struct {
  void (*fn)(void *ud);
  void *ud;
} listener;

struct flyte_outbox {
  char *dir; /* the outbox */
  journal *j; /* this host's slot */
  int sync;
  pthread_mutex_t mu;
  pthread_cond_t work;    /* for the syncer */
  pthread_cond_t synced_cv; /* for flyte_outbox_wait */
  pthread_cond_t written;   /* an appending thread's write is done */
  pthread_cond_t hurry;     /* ends the syncer's pause: a waiter, a stop */
  int waiters;
  int awaiting_writes; /* threads waiting on `written` */
  _Atomic uint64_t durable;
  uint64_t synced; /* what the syncer made durable (under mu) */
  pthread_t syncer;
  int syncer_started, stopping;
  listener listeners[MAX_LISTENERS];
  atomic_int nlisteners;
  atomic_long lost_takes;
  uint64_t records, bytes, syncs;
};

/* ---- batches written without the lock (o->mu held on entry and return) */

/* A ticket for a batch about to be written. */
static uint64_t ticket_take(flyte_outbox *o) {
  journal *j = o->j;
  while (j->ticket_next - j->written_upto >= TICKETS) {
    o->awaiting_writes++;
    pthread_cond_wait(&o->written, &o->mu);
    o->awaiting_writes--;
  }
  return j->ticket_next++;
}

/* The batch of ticket t is written (or failed). */
static void ticket_finish(flyte_outbox *o, uint64_t t) {
  journal *j = o->j;
  j->ticket_done[t % TICKETS] = 1;
  while (j->written_upto < j->ticket_next &&
         j->ticket_done[j->written_upto % TICKETS]) {
    j->ticket_done[j->written_upto % TICKETS] = 0;
    j->written_upto++;
  }
  if (o->awaiting_writes) pthread_cond_broadcast(&o->written);
}

/* Waits until every batch with a ticket below upto is written. */
static void written_wait(flyte_outbox *o, uint64_t upto) {
  while (o->j->written_upto < upto) {
    o->awaiting_writes++;
    pthread_cond_wait(&o->written, &o->mu);
    o->awaiting_writes--;
  }
}

/* Waits for a moment with no batch on its way (returns 1, the lock held
 * from then on), giving up after a while under steady writes (0). */
static int writes_settle(flyte_outbox *o) {
  for (int tries = 0; tries < 1000; tries++) {
    if (o->j->written_upto == o->j->ticket_next) return 1;
    written_wait(o, o->j->ticket_next);
  }
  return 0;
}

static int has_work(flyte_outbox *o) {
  journal *j = o->j;
  segment *first = j->first;
  return (o->sync && j->seq > o->synced) || j->nretired || j->dir_dirty ||
         j->want_compact ||
         (first && first->doomed && !first->failed &&
          (!o->sync || first->doom_seq <= o->synced));
}

/* The syncer: compacts when a segment was retired, fdatasyncs what was
 * appended (and the segments retired since, and the directory when a
 * segment was created), publishes the durable sequence, calls the
 * listeners, then deletes the segments doomed at or before it. Under
 * steady load it lets SYNC_GAP pass between syncs. */
static void *syncer_main(void *arg) {
  flyte_outbox *o = arg;
  journal *j = o->j;
  int warned = 0;
  double last_sync = 0;
  pthread_mutex_lock(&o->mu);
  for (;;) {
    while (!o->stopping && !has_work(o)) pthread_cond_wait(&o->work, &o->mu);
    if (o->stopping && !has_work(o)) break;
    if (j->want_compact) {
      /* compaction reads old segments: no batch may be on its way to one
       * (else it would read zeros where a record is being written) */
      if (writes_settle(o)) {
        j->want_compact = 0;
        compact(j);
      }
    }
    if (o->sync && j->seq > o->synced) {
      /* Under steady load, a sync at most every SYNC_GAP: the records of
       * that time share it. Not while a thread is blocked waiting (the
       * blocking functions), nor when stopping. */
      double since = now_mono() - last_sync;
      if (since < SYNC_GAP && !o->waiters && !o->stopping) {
        /* the pause ends early when a thread starts to wait (it holds up
         * its worker's loop) or the outbox closes */
        struct timespec until;
        flyte_deadline_in(SYNC_GAP - since, &until);
        while (!o->waiters && !o->stopping &&
               pthread_cond_timedwait(&o->hurry, &o->mu, &until) == 0)
          continue;
      }
      last_sync = now_mono();
    }
    /* this pass's batch goes out with a ticket, after every batch taken
     * before it */
    uint64_t ticket = ticket_take(o);
    uint64_t target = j->seq;
    int fd = j->active ? j->active->fd : -1;
    uint64_t num = j->active ? j->active->num : 0;
    /* what waits in memory, to write before the sync; a kept buffer for
     * what comes meanwhile */
    unsigned char *batch = j->pend;
    size_t nbatch = j->npend, cbatch = j->cpend;
    uint64_t batch_off = j->pend_off;
    pend_renew(j);
    atomic_store(&j->urgent, 0); /* written just below */
    int retired[64];
    size_t nretired = j->nretired < 64 ? j->nretired : 64;
    memcpy(retired, j->retired, nretired * sizeof *retired);
    memmove(j->retired, j->retired + nretired,
            (j->nretired - nretired) * sizeof *j->retired);
    j->nretired -= nretired;
    int dir = j->dir_dirty, more = j->nretired != 0;
    j->dir_dirty = 0;
    /* records up to target that an appending thread took out to write
     * are on their way, to the active segment or one retired since: wait
     * for those writes (short) before the sync, and before closing a
     * retired segment's fd under them. Batches taken from here on go to
     * segments this pass does not close. */
    written_wait(o, ticket);
    pthread_mutex_unlock(&o->mu);

    int failed = 0, wrote = 0; /* 1: written; else an errno */
    if (nbatch) wrote = fd < 0 ? EBADF
                        : write_at(fd, batch, nbatch, batch_off) == 0 ? 1
                                                                       : errno;
    pthread_mutex_lock(&o->mu);
    ticket_finish(o, ticket); /* an intent waiting on it goes on now */
    pthread_mutex_unlock(&o->mu);
    for (size_t i = 0; i < nretired; i++) {
      if (o->sync && fdatasync(retired[i]) != 0) failed = errno;
      close(retired[i]);
    }
    if (o->sync && dir && fsync(j->dir_fd) != 0) failed = errno;
    if (o->sync && fd >= 0 && !more && fdatasync(fd) != 0) failed = errno;
    if (failed && !warned) {
      /* nothing better to do than go on: say so, once */
      flyte_error("outbox: fdatasync in %s failed: %s; records may not "
                  "survive a crash of the machine",
                  j->slot, strerror(failed));
      warned = 1;
    }

    pthread_mutex_lock(&o->mu);
    if (wrote == 1)
      j->write_failed = 0;
    else if (wrote)
      write_failed(j, num, wrote);
    if (failed) j->write_errors++;
    spare_keep(j, batch, cbatch);
    if (o->sync && !more && target > o->synced) {
      o->synced = target;
      atomic_store(&o->durable, target);
      o->syncs++;
      if (o->waiters) pthread_cond_broadcast(&o->synced_cv);
      int n = atomic_load(&o->nlisteners);
      pthread_mutex_unlock(&o->mu);
      for (int i = 0; i < n; i++) o->listeners[i].fn(o->listeners[i].ud);
      pthread_mutex_lock(&o->mu);
    }
    delete_doomed(j, &o->mu, o->sync ? o->synced : UINT64_MAX);
  }
  pthread_mutex_unlock(&o->mu);
  return NULL;
}

flyte_outbox *flyte_outbox_open(const char *dir, int sync, char *err,
                                size_t errlen) {
  flyte_outbox *o = calloc(1, sizeof *o);
  if (o == NULL || (o->dir = strdup(dir)) == NULL) {
    free(o);
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  o->sync = sync != FLYTE_OUTBOX_SYNC_OFF;
  pthread_mutex_init(&o->mu, NULL);
  pthread_cond_init(&o->work, NULL);
  pthread_cond_init(&o->synced_cv, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&o->hurry, &ca);
  pthread_condattr_destroy(&ca);
  pthread_cond_init(&o->written, NULL);
  if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
    snprintf(err, errlen, "cannot create %s: %s", dir, strerror(errno));
    goto fail;
  }
  int lock_fd = -1, why = 0;
  char *slot = NULL;
  for (int n = 0; n < MAX_SLOTS && lock_fd < 0; n++) {
    char name[32];
    snprintf(name, sizeof name, "slot-%d", n);
    slot = path_join(dir, name);
    if (slot == NULL) break;
    if ((mkdir(slot, 0700) != 0 && errno != EEXIST) ||
        (lock_fd = lock_slot(slot)) < 0) {
      if (errno != EEXIST && errno != EWOULDBLOCK) why = errno;
      free(slot);
      slot = NULL;
    }
  }
  if (lock_fd < 0) {
    snprintf(err, errlen, "no free slot in %s (%s)", dir,
             why ? strerror(why) : "all in use");
    goto fail;
  }
  if (o->sync) { /* the slot's directory entry, once */
    int d = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (d >= 0) {
      fsync(d);
      close(d);
    }
  }
  o->j = journal_open(slot, lock_fd, o->sync, err, errlen);
  free(slot);
  if (o->j == NULL) {
    close(lock_fd);
    goto fail;
  }
  atomic_store(&o->durable, o->j->seq);
  o->synced = o->j->seq;
  o->j->behind = o->sync;
  if (pthread_create(&o->syncer, NULL, syncer_main, o) != 0) {
    snprintf(err, errlen, "cannot start the outbox's syncer thread");
    goto fail;
  }
  o->syncer_started = 1;
  return o;
fail:
  flyte_outbox_close(o);
  return NULL;
}

void flyte_outbox_close(flyte_outbox *o) {
  if (o == NULL) return;
  if (o->syncer_started) {
    pthread_mutex_lock(&o->mu);
    o->stopping = 1;
    pthread_cond_signal(&o->work);
    pthread_cond_signal(&o->hurry);
    pthread_mutex_unlock(&o->mu);
    pthread_join(o->syncer, NULL);
  }
  if (o->j) {
    int lock_fd = o->j->lock_fd;
    journal_close(o->j);
    close(lock_fd); /* releases the flock */
  }
  pthread_cond_destroy(&o->work);
  pthread_cond_destroy(&o->synced_cv);
  pthread_cond_destroy(&o->hurry);
  pthread_cond_destroy(&o->written);
  pthread_mutex_destroy(&o->mu);
  free(o->dir);
  free(o);
}

void flyte_outbox_set_segment_size(flyte_outbox *o, size_t bytes) {
  pthread_mutex_lock(&o->mu);
  o->j->segment_size = bytes < 64 ? 64 : bytes;
  pthread_mutex_unlock(&o->mu);
}

/* Writes what waits in memory, as flush_pending does, but without the
 * outbox's lock during the pwrite, so that other threads append
 * meanwhile. ordered: only after every batch taken before it is written
 * (a take intent's: the file then never holds it without the taken
 * records appended before it). */
static void write_pending(flyte_outbox *o, int ordered) {
  journal *j = o->j;
  atomic_store(&j->urgent, 0);
  if (j->npend == 0 || j->active == NULL) {
    if (ordered) written_wait(o, j->ticket_next);
    return;
  }
  uint64_t t = ticket_take(o); /* may wait: before the batch is taken */
  segment *a = j->active;
  if (j->npend == 0 || a == NULL) { /* written meanwhile */
    ticket_finish(o, t);
    if (ordered) written_wait(o, j->ticket_next);
    return;
  }
  unsigned char *buf = j->pend;
  size_t n = j->npend, cap = j->cpend;
  uint64_t off = j->pend_off, num = a->num;
  int fd = a->fd; /* open till the syncer saw this ticket finished */
  pend_renew(j);
  atomic_store(&j->urgent, 0);
  if (ordered) written_wait(o, t);
  pthread_mutex_unlock(&o->mu);
  int rc = write_at(fd, buf, n, off), e = errno;
  pthread_mutex_lock(&o->mu);
  if (rc != 0)
    write_failed(j, num, e);
  else
    j->write_failed = 0;
  ticket_finish(o, t);
  spare_keep(j, buf, cap);
}

/* Appends a built frame. */
static int append(flyte_outbox *o, framed *f, char type, uint64_t ref,
                  uint64_t *seq, char *err, size_t errlen) {
  pthread_mutex_lock(&o->mu);
  if (type == 'D' && tget(&o->j->entries, ref) == NULL) {
    pthread_mutex_unlock(&o->mu); /* unknown or done already */
    *seq = 0;
    return 0;
  }
  int rc = journal_write(o->j, f, type, ref, seq, err, errlen);
  if (rc == 0) {
    o->records++;
    o->bytes += f->len;
    if (!o->sync) atomic_store(&o->durable, *seq);
  }
  if (has_work(o)) pthread_cond_signal(&o->work);
  /* an intent is in the file before the take request goes: with what
   * waits (the taken records of this round), one pwrite */
  if (rc == 0 && type == 'I') write_pending(o, 1);
  pthread_mutex_unlock(&o->mu);
  return rc;
}

static int append_record(flyte_outbox *o, char type, uint64_t ref, int nstr,
                         const char *const *str, const size_t *len,
                         uint64_t *seq, char *err, size_t errlen) {
  framed f;
  *seq = 0;
  if (frame_build(&f, type, ref, now_us(), nstr, str, len) != 0) {
    snprintf(err, errlen, "out of memory (or a record over 1 GiB)");
    return -1;
  }
  int rc = append(o, &f, type, ref, seq, err, errlen);
  free(f.buf);
  return rc;
}

#define S(s) ((s) ? (s) : "")
#define L(s) ((s) ? strlen(s) : 0)

int flyte_outbox_append_taken(flyte_outbox *o, uint64_t intent,
                              const char *result_url, const char *command,
                              const char *action, uint64_t *seq, char *err,
                              size_t errlen) {
  const char *str[] = {S(result_url), S(command), S(action)};
  size_t len[] = {L(result_url), L(command), L(action)};
  return append_record(o, 'T', intent, 3, str, len, seq, err, errlen);
}

int flyte_outbox_append_result(flyte_outbox *o, uint64_t entry,
                               const char *result_url, const char *command,
                               const char *action, const char *body,
                               size_t len, uint64_t *seq, char *err,
                               size_t errlen) {
  if (entry == 0) {
    snprintf(err, errlen, "a result needs its entry");
    return -1;
  }
  const char *str[] = {S(result_url), S(command), S(action), S(body)};
  size_t lens[] = {L(result_url), L(command), L(action), body ? len : 0};
  return append_record(o, 'R', entry, 4, str, lens, seq, err, errlen);
}

int flyte_outbox_append_event(flyte_outbox *o, const char *body, size_t len,
                              uint64_t *seq, char *err, size_t errlen) {
  const char *str[] = {S(body)};
  size_t lens[] = {body ? len : 0};
  return append_record(o, 'E', 0, 1, str, lens, seq, err, errlen);
}

int flyte_outbox_append_intent(flyte_outbox *o, const char *take_url,
                               uint64_t *seq, char *err, size_t errlen) {
  const char *str[] = {S(take_url)};
  size_t len[] = {L(take_url)};
  return append_record(o, 'I', 0, 1, str, len, seq, err, errlen);
}

void flyte_outbox_flush(flyte_outbox *o) {
  if (!atomic_load(&o->j->urgent)) return;
  pthread_mutex_lock(&o->mu);
  if (atomic_load(&o->j->urgent)) write_pending(o, 0);
  pthread_mutex_unlock(&o->mu);
}

uint64_t flyte_outbox_appended(flyte_outbox *o) {
  pthread_mutex_lock(&o->mu);
  uint64_t seq = o->j->seq;
  pthread_mutex_unlock(&o->mu);
  return seq;
}

uint64_t flyte_outbox_durable(flyte_outbox *o) {
  return atomic_load(&o->durable);
}

int flyte_outbox_on_sync(flyte_outbox *o, void (*fn)(void *ud), void *ud) {
  pthread_mutex_lock(&o->mu);
  int n = atomic_load(&o->nlisteners), rc = -1;
  if (n < MAX_LISTENERS) {
    o->listeners[n] = (listener){fn, ud};
    atomic_store(&o->nlisteners, n + 1);
    rc = 0;
  }
  pthread_mutex_unlock(&o->mu);
  return rc;
}

void flyte_outbox_wait(flyte_outbox *o, uint64_t seq) {
  if (atomic_load(&o->durable) >= seq) return;
  pthread_mutex_lock(&o->mu);
  o->waiters++;
  pthread_cond_signal(&o->hurry);
  while (atomic_load(&o->durable) < seq) pthread_cond_wait(&o->synced_cv, &o->mu);
  o->waiters--;
  pthread_mutex_unlock(&o->mu);
}

long flyte_outbox_taken(flyte_outbox *o, const char *result_url,
                        const char *command, const char *action, char *err,
                        size_t errlen) {
  uint64_t seq;
  if (flyte_outbox_append_taken(o, 0, result_url, command, action, &seq, err,
                                errlen) != 0)
    return -1;
  flyte_outbox_wait(o, seq);
  return (long)seq;
}

int flyte_outbox_result(flyte_outbox *o, long entry, const char *result_url,
                        const char *command, const char *action,
                        const char *body, size_t len, char *err,
                        size_t errlen) {
  uint64_t seq;
  if (entry <= 0) {
    snprintf(err, errlen, "a result needs its entry");
    return -1;
  }
  if (flyte_outbox_append_result(o, (uint64_t)entry, result_url, command,
                                 action, body, len, &seq, err, errlen) != 0)
    return -1;
  flyte_outbox_wait(o, seq);
  return 0;
}

long flyte_outbox_event(flyte_outbox *o, const char *body, size_t len,
                        char *err, size_t errlen) {
  uint64_t seq;
  if (flyte_outbox_append_event(o, body, len, &seq, err, errlen) != 0)
    return -1;
  flyte_outbox_wait(o, seq);
  return (long)seq;
}

void flyte_outbox_done(flyte_outbox *o, long entry) {
  uint64_t seq;
  char err[300];
  if (entry <= 0) return;
  if (append_record(o, 'D', (uint64_t)entry, 0, NULL, NULL, &seq, err,
                    sizeof err) != 0)
    flyte_error("outbox: %s", err); /* delivered again after a restart */
}

long flyte_outbox_lost_takes(flyte_outbox *o) {
  return atomic_load(&o->lost_takes);
}

void flyte_outbox_stats_get(flyte_outbox *o, flyte_outbox_stats *st) {
  pthread_mutex_lock(&o->mu);
  st->records = o->records;
  st->bytes = o->bytes;
  st->syncs = o->syncs;
  st->segments = o->j->nsegments;
  st->entries = (long)o->j->entries.n;
  st->write_errors = o->j->write_errors;
  pthread_mutex_unlock(&o->mu);
}

/* ---- recovery ----------------------------------------------------------------- */

typedef int (*recover_fn)(void *ud, const flyte_outbox_entry *e);

/* Where recovery writes: this host's outbox (o) or, for a dead host's
 * slot, that slot's journal (j), which this thread alone uses. */
typedef struct {
  flyte_outbox *o;
  journal *j;
  recover_fn fn;
  void *ud;
  int seen;
  atomic_long *lost; /* the outbox's count of lost takes */
} recovery;

static int rec_append(recovery *r, char type, uint64_t ref, int nstr,
                      const char *const *str, const size_t *len,
                      uint64_t *seq, char *err, size_t errlen) {
  if (r->o)
    return append_record(r->o, type, ref, nstr, str, len, seq, err, errlen);
  framed f;
  if (frame_build(&f, type, ref, now_us(), nstr, str, len) != 0) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  int rc = journal_write(r->j, &f, type, ref, seq, err, errlen);
  free(f.buf);
  return rc;
}

static void rec_done(recovery *r, uint64_t id) {
  uint64_t seq;
  char err[300];
  if (r->o) {
    flyte_outbox_done(r->o, (long)id);
  } else if (tget(&r->j->entries, id) &&
             rec_append(r, 'D', id, 0, NULL, NULL, &seq, err, sizeof err))
    flyte_error("outbox: %s", err);
}

/* Makes what was appended durable: for moving old entries forward. */
static void rec_sync(recovery *r, uint64_t seq) {
  if (r->o)
    flyte_outbox_wait(r->o, seq);
  else
    flush_inline(r->j);
}

/* An old-format entry kept for the next start goes into the journal. */
static int journal_old(recovery *r, const flyte_outbox_entry *e) {
  uint64_t seq, entry;
  char err[300];
  const char *tstr[] = {S(e->result_url), S(e->command), S(e->action)};
  size_t tlen[] = {L(e->result_url), L(e->command), L(e->action)};
  const char *body[] = {S(e->body)};
  size_t blen[] = {L(e->body)};
  int rc;
  if (strcmp(e->kind, "event") == 0) {
    rc = rec_append(r, 'E', 0, 1, body, blen, &seq, err, sizeof err);
  } else {
    rc = rec_append(r, 'T', 0, 3, tstr, tlen, &entry, err, sizeof err);
    seq = entry;
    if (rc == 0 && strcmp(e->kind, "result") == 0) {
      const char *rstr[] = {tstr[0], tstr[1], tstr[2], body[0]};
      size_t rlen[] = {tlen[0], tlen[1], tlen[2], blen[0]};
      rc = rec_append(r, 'R', entry, 4, rstr, rlen, &seq, err, sizeof err);
    }
  }
  if (rc != 0) {
    flyte_error("outbox: %s", err);
    return -1;
  }
  rec_sync(r, seq);
  return 0;
}

static int compare_names(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The old format's entries in one slot directory, oldest first. */
static void recover_old(recovery *r, const char *slot) {
  DIR *d = opendir(slot);
  if (d == NULL) return;
  char **names = NULL;
  size_t n = 0, cap = 0;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    size_t len = strlen(de->d_name);
    if (len > 4 && strcmp(de->d_name + len - 4, ".tmp") == 0) {
      /* a write cut short by a crash: the entry before it still stands */
      char *tmp = path_join(slot, de->d_name);
      if (tmp) unlink(tmp);
      free(tmp);
      continue;
    }
    if (len < 6 || strcmp(de->d_name + len - 5, ".json") != 0) continue;
    if (grow((void **)&names, &cap, n, sizeof *names) != 0) break;
    if ((names[n] = strdup(de->d_name)) != NULL) n++;
  }
  closedir(d);
  if (n) qsort(names, n, sizeof *names, compare_names);
  for (size_t i = 0; i < n; i++) {
    char *path = path_join(slot, names[i]);
    json_error_t je;
    json_t *j = path ? json_load_file(path, 0, &je) : NULL;
    flyte_outbox_entry e = {
        json_string_value(json_object_get(j, "kind")),
        json_string_value(json_object_get(j, "result_url")),
        json_string_value(json_object_get(j, "command")),
        json_string_value(json_object_get(j, "action")),
        json_string_value(json_object_get(j, "body")), 0};
    int valid = e.kind &&
                ((strcmp(e.kind, "taken") == 0 && e.result_url && e.command) ||
                 (strcmp(e.kind, "result") == 0 && e.result_url && e.body) ||
                 (strcmp(e.kind, "event") == 0 && e.body));
    if (path && !valid) {
      size_t len = strlen(path) + sizeof ".corrupt";
      char *aside = malloc(len);
      if (aside) {
        snprintf(aside, len, "%s.corrupt", path);
        rename(path, aside);
      }
      flyte_error("outbox entry %s is corrupt (%s); set aside as %s", path,
                  j ? "fields missing" : je.text, aside ? aside : "?");
      free(aside);
    } else if (path) {
      r->seen++;
      if (r->fn(r->ud, &e) == 0 || journal_old(r, &e) == 0) unlink(path);
    }
    json_decref(j);
    free(path);
    free(names[i]);
  }
  free(names);
}

static void log_lost_take(const char *slot, const char *url,
                          int64_t time_us) {
  struct timespec ts = {(time_t)(time_us / 1000000),
                        (long)(time_us % 1000000) * 1000};
  char when[40];
  flyte_time_rfc3339_at(when, sizeof when, 3, &ts);
  flyte_error("outbox: an action may have been taken and lost: the take "
              "request at %s (%s, in %s) has no record of its reply; an "
              "action the flyte-api handed out then stays PENDING for good",
              when, url && *url ? url : "?", slot);
}

/* Hands the entries read from the journal to fn, oldest first. With r->o,
 * that outbox's mutex guards the journal. */
static void recover_journal(recovery *r, journal *j) {
  pthread_mutex_t *mu = r->o ? &r->o->mu : NULL;
  for (size_t i = 0; i < j->nrecovered; i++) {
    uint64_t id = j->recovered[i];
    if (mu) pthread_mutex_lock(mu);
    jentry *e = tget(&j->entries, id);
    char *data = e ? e->data : NULL;
    char kind = e ? e->kind : 0;
    int64_t time_us = e ? e->time_us : 0;
    const char *f[4] = {0};
    if (e) {
      memcpy(f, e->f, sizeof f);
      e->data = NULL;
    }
    if (mu) pthread_mutex_unlock(mu);
    if (data == NULL) continue;
    if (kind == 'I') {
      log_lost_take(j->slot, f[0], time_us);
      atomic_fetch_add(r->lost, 1);
      rec_done(r, id);
    } else {
      flyte_outbox_entry fe = {
          kind == 'T' ? "taken" : kind == 'R' ? "result" : "event",
          kind == 'E' ? NULL : f[0], kind == 'E' ? NULL : f[1],
          kind == 'E' || f[2] == NULL || !*f[2] ? NULL : f[2],
          kind == 'E' ? f[0] : kind == 'R' ? f[3] : NULL,
          r->o ? id : 0};
      r->seen++;
      /* 1: taken over, and ended with flyte_outbox_done (this journal's
       * entries only) */
      if (r->fn(r->ud, &fe) == 0) rec_done(r, id);
    }
    free(data);
  }
  free(j->recovered);
  j->recovered = NULL;
  j->nrecovered = 0;
}

int flyte_outbox_recover(flyte_outbox *o, recover_fn fn, void *ud) {
  recovery r = {o, NULL, fn, ud, 0, &o->lost_takes};
  recover_old(&r, o->j->slot);
  recover_journal(&r, o->j);
  for (int n = 0; n < MAX_SLOTS; n++) {
    char name[32];
    snprintf(name, sizeof name, "slot-%d", n);
    char *slot = path_join(o->dir, name);
    if (slot == NULL) break;
    struct stat st;
    if (stat(slot, &st) != 0) {
      free(slot);
      break;
    }
    int fd = strcmp(slot, o->j->slot) == 0 ? -1 : lock_slot(slot);
    if (fd >= 0) { /* a live host holds its own: skipped */
      char err[300];
      journal *j = journal_open(slot, fd, o->sync, err, sizeof err);
      if (j == NULL) {
        flyte_error("outbox: %s", err);
      } else {
        recovery other = {NULL, j, fn, ud, 0, &o->lost_takes};
        recover_old(&other, slot);
        recover_journal(&other, j);
        r.seen += other.seen;
        journal_close(j);
      }
      close(fd);
    }
    free(slot);
  }
  return r.seen;
}
