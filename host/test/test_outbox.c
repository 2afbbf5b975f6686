/* test_outbox.c - the outbox's journal: the record format, group commit,
 * rotation and deletion, recovery after a crash (a child killed with its
 * records in the page cache), a torn tail, a corrupt record in the middle,
 * take intents, a dead host's slot, the old one-file-per-entry format, and
 * a randomized run checked against a model.
 *
 * `test_outbox bench [threads] [seconds]` prints appends/s and fsyncs/s
 * instead (a micro-benchmark of group commit; not a test).
 */
#define _GNU_SOURCE
#include "../outbox.h"
#include "../log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test.h"

#include <signal.h>
#include <sys/syscall.h>

/* pwrite, as the outbox calls it: slowed on other threads than the test's
 * own (the syncer) while slow_writes is set, to hold a write in flight. */
static pthread_t test_thread;
static atomic_int slow_writes;
ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
  if (atomic_load(&slow_writes) && !pthread_equal(pthread_self(), test_thread))
    usleep(300 * 1000);
  return (ssize_t)syscall(SYS_pwrite64, fd, buf, n, off);
}

/* ---- helpers --------------------------------------------------------------- */

static char *tmpdir(void) {
  char tmpl[] = "/tmp/flyte-outbox-test.XXXXXX";
  char *d = mkdtemp(tmpl);
  if (d == NULL) {
    perror("mkdtemp");
    exit(1);
  }
  return strdup(d);
}

static void rm_rf(const char *dir) {
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", dir);
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The segment files in DIR/slot-N; with names: the first one's path. */
static int segments(const char *dir, int slot, char *first, size_t n) {
  char path[512];
  snprintf(path, sizeof path, "%s/slot-%d", dir, slot);
  DIR *d = opendir(path);
  int count = 0;
  char best[300] = "";
  struct dirent *de;
  while (d && (de = readdir(d)) != NULL)
    if (strncmp(de->d_name, "journal-", 8) == 0) {
      count++;
      if (best[0] == '\0' || strcmp(de->d_name, best) < 0)
        snprintf(best, sizeof best, "%s", de->d_name);
    }
  if (d) closedir(d);
  if (first) snprintf(first, n, "%s/%s", path, best);
  return count;
}

/* Lists the entries DIR/slot-N holds besides the lock, one string. */
static void listing(const char *dir, int slot, char *out, size_t n) {
  char path[512];
  snprintf(path, sizeof path, "%s/slot-%d", dir, slot);
  DIR *d = opendir(path);
  out[0] = '\0';
  struct dirent *de;
  while (d && (de = readdir(d)) != NULL) {
    if (de->d_name[0] == '.' || strcmp(de->d_name, "lock") == 0) continue;
    size_t len = strlen(out);
    snprintf(out + len, n - len, "%s%s", len ? " " : "", de->d_name);
  }
  if (d) closedir(d);
}

/* Waits (up to 5 s) until the outbox has at most `n` segments. */
static int wait_segments(flyte_outbox *o, long n) {
  double deadline = now() + 5;
  flyte_outbox_stats st;
  do {
    flyte_outbox_stats_get(o, &st);
    if (st.segments <= n) return 1;
    usleep(1000);
  } while (now() < deadline);
  fprintf(stderr, "still %ld segments, want at most %ld\n", st.segments, n);
  return 0;
}

/* What recovery hands out, as "kind:action:body" lines. */
typedef struct {
  char got[8192];
  int n;
  const char *keep; /* entries whose action (or body) contains it are kept */
} seen;

static int collect(void *ud, const flyte_outbox_entry *e) {
  seen *s = ud;
  size_t len = strlen(s->got);
  const char *id = e->action ? e->action : e->body ? e->body : "";
  snprintf(s->got + len, sizeof s->got - len, "%s:%s:%s;", e->kind,
           e->action ? e->action : "", e->body ? e->body : "");
  s->n++;
  CHECK(e->kind != NULL);
  if (strcmp(e->kind, "event") != 0)
    CHECK(e->result_url && e->command && strlen(e->result_url) > 0);
  if (strcmp(e->kind, "taken") != 0) CHECK(e->body != NULL);
  return s->keep && strstr(id, s->keep) ? -1 : 0;
}

static flyte_outbox *open_box(const char *dir, int sync) {
  char err[300];
  flyte_outbox *o = flyte_outbox_open(dir, sync, err, sizeof err);
  if (o == NULL) fprintf(stderr, "open %s: %s\n", dir, err);
  return o;
}

static int recover(flyte_outbox *o, seen *s) {
  s->got[0] = '\0';
  s->n = 0;
  return flyte_outbox_recover(o, collect, s);
}

#define URL "http://api/v1/packs/P/actions/1/result"

static uint64_t taken(flyte_outbox *o, uint64_t intent, const char *action) {
  uint64_t seq = 0;
  char err[300];
  CHECK(flyte_outbox_append_taken(o, intent, URL, "echo", action, &seq, err,
                                  sizeof err) == 0);
  return seq;
}

/* ---- the record format --------------------------------------------------------- */

typedef struct {
  int records, bad, tail;
  size_t bad_bytes;
  flyte_journal_record last;
  char last_str[4][64];
} scan_count;

static void on_rec(void *ud, const flyte_journal_record *r, size_t off) {
  scan_count *c = ud;
  (void)off;
  c->records++;
  c->last = *r;
  for (int i = 0; i < r->nstr; i++)
    snprintf(c->last_str[i], sizeof c->last_str[i], "%.*s", (int)r->len[i],
             r->str[i]);
}

static void on_bad(void *ud, size_t off, size_t n, int tail) {
  scan_count *c = ud;
  (void)off;
  c->bad++;
  c->bad_bytes += n;
  c->tail += tail;
}

static unsigned char *encode(char type, uint64_t seq, uint64_t ref,
                             const char *a, const char *b, size_t *len) {
  flyte_journal_record r = {type, seq, ref, 0x0102030405060708, 0, {0}, {0}};
  const char *strs[4] = {a, b, "act", "{\"x\":1}"};
  r.nstr = type == 'T' ? 3 : type == 'R' ? 4 : type == 'D' ? 0 : 1;
  for (int i = 0; i < r.nstr; i++) {
    r.str[i] = strs[i] ? strs[i] : "";
    r.len[i] = strlen(r.str[i]);
  }
  return flyte_journal_encode(&r, len);
}

static void test_format(void) {
  CHECK(flyte_crc32c(0, "123456789", 9) == 0xE3069283u);
  CHECK(flyte_crc32c(flyte_crc32c(0, "1234", 4), "56789", 5) == 0xE3069283u);
  CHECK(flyte_crc32c_tables(0, "123456789", 9) == 0xE3069283u);
  /* the instruction's path and the tables' agree, whatever the length,
   * alignment and starting value */
  {
    unsigned char buf[300];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof buf; i++) {
      x = x * 1103515245u + 12345u;
      buf[i] = (unsigned char)(x >> 16);
    }
    int same = 1;
    for (size_t off = 0; off < 8; off++)
      for (size_t len = 0; len + off <= sizeof buf; len += 7)
        same &= flyte_crc32c(len, buf + off, len) ==
                flyte_crc32c_tables(len, buf + off, len);
    CHECK(same);
  }

  /* three records after the header */
  size_t l1, l2, l3;
  unsigned char *r1 = encode('T', 1, 0, URL, "echo", &l1);
  unsigned char *r2 = encode('R', 2, 1, URL, "echo", &l2);
  unsigned char *r3 = encode('D', 3, 1, NULL, NULL, &l3);
  CHECK(r1 && r2 && r3);
  CHECK(encode('D', 3, 0, NULL, NULL, &l3) == NULL); /* a done needs its ref */
  CHECK(encode('X', 3, 0, NULL, NULL, &l3) == NULL);
  size_t len = FLYTE_JOURNAL_HEADER_LEN + l1 + l2 + l3;
  unsigned char *seg = malloc(len);
  memcpy(seg, FLYTE_JOURNAL_HEADER, FLYTE_JOURNAL_HEADER_LEN);
  memcpy(seg + FLYTE_JOURNAL_HEADER_LEN, r1, l1);
  memcpy(seg + FLYTE_JOURNAL_HEADER_LEN + l1, r2, l2);
  memcpy(seg + FLYTE_JOURNAL_HEADER_LEN + l1 + l2, r3, l3);

  scan_count c = {0};
  CHECK(flyte_journal_scan(seg, len, on_rec, on_bad, &c) == 3);
  CHECK(c.bad == 0 && c.last.type == 'D' && c.last.ref == 1);

  /* a torn tail: every cut of the last record */
  for (size_t cut = 1; cut < l3; cut++) {
    memset(&c, 0, sizeof c);
    CHECK(flyte_journal_scan(seg, len - cut, on_rec, on_bad, &c) == 2);
    /* zeros at its end are not counted: allocated space looks so */
    CHECK(c.bad == 1 && c.tail == 1 && c.bad_bytes > 0 &&
          c.bad_bytes <= l3 - cut);
  }

  /* a corrupt byte anywhere in the middle record: it alone is skipped */
  for (size_t at = 0; at < l2; at++) {
    unsigned char *p = seg + FLYTE_JOURNAL_HEADER_LEN + l1 + at;
    *p ^= 0x40;
    memset(&c, 0, sizeof c);
    size_t n = flyte_journal_scan(seg, len, on_rec, on_bad, &c);
    *p ^= 0x40;
    CHECK(n == 2);
    CHECK(c.bad == 1 && c.tail == 0 && c.bad_bytes == l2);
    CHECK(c.last.type == 'D');
  }

  /* a record's strings come back as they went */
  memset(&c, 0, sizeof c);
  CHECK(flyte_journal_scan(r2, l2, on_rec, on_bad, &c) == 1);
  CHECK(c.last.seq == 2 && c.last.time_us == 0x0102030405060708);
  CHECK_STR(c.last_str[0], URL);
  CHECK_STR(c.last_str[3], "{\"x\":1}");

  /* zeros after the records: space allocated for more, not a tail */
  unsigned char *spare = calloc(1, len + 4096);
  memcpy(spare, seg, len);
  memset(&c, 0, sizeof c);
  CHECK(flyte_journal_scan(spare, len + 4096, on_rec, on_bad, &c) == 3);
  CHECK(c.bad == 0);
  /* a record cut short there: a tail, its zeros not counted */
  memset(spare + len - 5, 0, 5);
  memset(&c, 0, sizeof c);
  CHECK(flyte_journal_scan(spare, len + 4096, on_rec, on_bad, &c) == 2);
  CHECK(c.bad == 1 && c.tail == 1 && c.bad_bytes <= l3 - 5);
  /* zeros in the middle (pages written back out of order) are corrupt */
  memcpy(spare, seg, len);
  memset(spare + FLYTE_JOURNAL_HEADER_LEN + l1, 0, l2);
  memset(&c, 0, sizeof c);
  CHECK(flyte_journal_scan(spare, len + 4096, on_rec, on_bad, &c) == 2);
  CHECK(c.bad == 1 && c.tail == 0 && c.bad_bytes == l2);
  free(spare);

  /* no header: records are still read */
  memset(&c, 0, sizeof c);
  CHECK(flyte_journal_scan(seg + FLYTE_JOURNAL_HEADER_LEN,
                           len - FLYTE_JOURNAL_HEADER_LEN, on_rec, on_bad,
                           &c) == 3);
  free(r1);
  free(r2);
  free(r3);
  free(seg);
}

/* ---- group commit ------------------------------------------------------------- */

static atomic_int syncs_heard;
static void on_sync(void *ud) {
  (void)ud;
  atomic_fetch_add(&syncs_heard, 1);
}

typedef struct {
  flyte_outbox *o;
  int n, index;
} worker_arg;

static void *blocking_worker(void *arg) {
  worker_arg *w = arg;
  char err[300], action[32], body[64];
  for (int i = 0; i < w->n; i++) {
    snprintf(action, sizeof action, "w%d-%d", w->index, i);
    long e = flyte_outbox_taken(w->o, URL, "echo", action, err, sizeof err);
    CHECK(e > 0);
    CHECK(flyte_outbox_durable(w->o) >= (uint64_t)e);
    snprintf(body, sizeof body, "{\"event\":\"Echoed\",\"n\":%d}", i);
    CHECK(flyte_outbox_result(w->o, e, URL, "echo", action, body,
                              strlen(body), err, sizeof err) == 0);
    flyte_outbox_done(w->o, e);
  }
  return NULL;
}

static void test_group_commit(void) {
  char *dir = tmpdir();
  flyte_outbox *o = open_box(dir, FLYTE_OUTBOX_SYNC_ALWAYS);
  CHECK(o != NULL);
  if (o == NULL) return;
  atomic_store(&syncs_heard, 0);
  CHECK(flyte_outbox_on_sync(o, on_sync, NULL) == 0);

  /* an async append: durable later, and the listener hears of it */
  uint64_t seq = taken(o, 0, "a1");
  CHECK(seq == 1);
  flyte_outbox_wait(o, seq);
  CHECK(flyte_outbox_durable(o) >= seq);
  double deadline = now() + 5;
  while (atomic_load(&syncs_heard) == 0 && now() < deadline) usleep(100);
  CHECK(atomic_load(&syncs_heard) >= 1);
  flyte_outbox_done(o, (long)seq);

  /* 8 threads at once: fewer fsyncs than records */
  pthread_t t[8];
  worker_arg args[8];
  for (int i = 0; i < 8; i++) {
    args[i] = (worker_arg){o, 200, i};
    pthread_create(&t[i], NULL, blocking_worker, &args[i]);
  }
  for (int i = 0; i < 8; i++) pthread_join(t[i], NULL);
  flyte_outbox_stats st;
  flyte_outbox_stats_get(o, &st);
  CHECK(st.records == 2 + 8 * 200 * 3);
  CHECK(st.entries == 0);
  CHECK(st.syncs > 0 && st.syncs < st.records);
  fprintf(stderr, "group commit: %llu records, %llu fsyncs (%.1f a sync)\n",
          (unsigned long long)st.records, (unsigned long long)st.syncs,
          (double)st.records / (double)st.syncs);

  /* done for an unknown entry writes nothing */
  flyte_outbox_done(o, 999999);
  flyte_outbox_stats_get(o, &st);
  CHECK(st.records == 2 + 8 * 200 * 3);
  flyte_outbox_close(o);

  /* a clean stop leaves nothing but the lock */
  char names[600];
  listing(dir, 0, names, sizeof names);
  CHECK_STR(names, "");

  /* sync off: durable at once */
  o = open_box(dir, FLYTE_OUTBOX_SYNC_OFF);
  seq = taken(o, 0, "b1");
  CHECK(flyte_outbox_durable(o) == seq);
  flyte_outbox_done(o, (long)seq);
  flyte_outbox_stats_get(o, &st);
  CHECK(st.syncs == 0);
  flyte_outbox_close(o);
  listing(dir, 0, names, sizeof names);
  CHECK_STR(names, "");
  rm_rf(dir);
  free(dir);
}

/* ---- what reaches the file when ---------------------------------------------- */

/* The records in the file now (what a process killed now leaves). */
static int records_in_file(const char *dir) {
  char path[600];
  if (segments(dir, 0, path, sizeof path) != 1) return -1;
  FILE *f = fopen(path, "rb");
  static unsigned char buf[1 << 16];
  size_t n = f ? fread(buf, 1, sizeof buf, f) : 0;
  if (f) fclose(f);
  return (int)flyte_journal_scan(buf, n, NULL, NULL, NULL);
}

/* With sync on, a result waits in memory for the syncer (its post waits
 * for the sync anyway). An intent is in the file when its append returns:
 * a process killed right after the take request must find it. A taken
 * record is in the file after the next intent (the worker's next take) or
 * flyte_outbox_flush (before the worker runs pack code or sleeps), so
 * that one pwrite carries both when the queue is hot. */
static void test_write_behind(void) {
  char *dir = tmpdir();
  flyte_outbox *o = open_box(dir, FLYTE_OUTBOX_SYNC_ALWAYS);
  CHECK(o != NULL);
  if (o == NULL) return;
  char err[300];
  uint64_t intent = 0, seq = 0;
  CHECK(flyte_outbox_append_intent(o, "http://api/take", &intent, err,
                                   sizeof err) == 0);
  CHECK(records_in_file(dir) >= 1);
  uint64_t t = taken(o, intent, "w1");
  flyte_outbox_flush(o);
  CHECK(records_in_file(dir) >= 2);
  CHECK(flyte_outbox_append_result(o, t, URL, "echo", "w1", "{}", 2, &seq,
                                   err, sizeof err) == 0);
  flyte_outbox_wait(o, seq);
  CHECK(records_in_file(dir) == 3); /* written with the sync */
  /* what waits goes out with the next intent */
  uint64_t t2 = taken(o, 0, "w2");
  CHECK(flyte_outbox_append_result(o, t2, URL, "echo", "w2", "{}", 2, &seq,
                                   err, sizeof err) == 0);
  taken(o, 0, "w3");
  CHECK(flyte_outbox_append_intent(o, "http://api/take", &intent, err,
                                   sizeof err) == 0);
  CHECK(records_in_file(dir) == 7);
  /* a flush with no taken record waiting leaves a result in memory; the
   * sync writes it */
  CHECK(flyte_outbox_append_result(o, t2, URL, "echo", "w2", "{}", 2, &seq,
                                   err, sizeof err) == 0);
  flyte_outbox_flush(o);
  flyte_outbox_wait(o, seq);
  CHECK(records_in_file(dir) == 8);
  flyte_outbox_close(o);
  rm_rf(dir);
  free(dir);
}

/* Threads that take as a worker does (an intent, then the taken record,
 * written with the next intent or a flush, then a result that waits for
 * the sync) while small segments rotate under them: their writes, made
 * without the outbox's lock, must each land in their own segment. Each
 * thread leaves its last 3 actions unfinished, and the next start must
 * find exactly those, each with its result, and no lost take. */
typedef struct {
  flyte_outbox *o;
  int index;
} taker_arg;

static void *taker(void *arg) {
  taker_arg *t = arg;
  char err[300], action[32], body[80];
  for (int i = 0; i < 300; i++) {
    uint64_t intent = 0, e = 0, seq = 0;
    CHECK(flyte_outbox_append_intent(t->o, "http://api/take", &intent, err,
                                     sizeof err) == 0);
    snprintf(action, sizeof action, "t%d-%d", t->index, i);
    CHECK(flyte_outbox_append_taken(t->o, intent, URL, "echo", action, &e,
                                    err, sizeof err) == 0);
    if (i % 2) flyte_outbox_flush(t->o);
    snprintf(body, sizeof body, "{\"event\":\"Echoed\",\"of\":\"%s\"}",
             action);
    CHECK(flyte_outbox_append_result(t->o, e, URL, "echo", action, body,
                                     strlen(body), &seq, err,
                                     sizeof err) == 0);
    flyte_outbox_wait(t->o, seq);
    if (i < 297) flyte_outbox_done(t->o, (long)e);
  }
  return NULL;
}

static void test_unlocked_writes(void) {
  char *dir = tmpdir();
  flyte_outbox *o = open_box(dir, FLYTE_OUTBOX_SYNC_ALWAYS);
  CHECK(o != NULL);
  if (o == NULL) return;
  flyte_outbox_set_segment_size(o, 2048); /* a rotation every few actions */
  pthread_t th[4];
  taker_arg args[4];
  for (int i = 0; i < 4; i++) {
    args[i] = (taker_arg){o, i};
    pthread_create(&th[i], NULL, taker, &args[i]);
  }
  for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
  flyte_outbox_stats st;
  flyte_outbox_stats_get(o, &st);
  CHECK(st.entries == 4 * 3);
  flyte_outbox_close(o);

  o = open_box(dir, FLYTE_OUTBOX_SYNC_ALWAYS);
  CHECK(o != NULL);
  if (o == NULL) return;
  seen s = {.keep = NULL};
  CHECK(recover(o, &s) == 4 * 3);
  CHECK(flyte_outbox_lost_takes(o) == 0);
  for (int t = 0; t < 4; t++)
    for (int i = 297; i < 300; i++) {
      char want[96];
      snprintf(want, sizeof want,
               "result:t%d-%d:{\"event\":\"Echoed\",\"of\":\"t%d-%d\"};", t,
               i, t, i);
      CHECK(strstr(s.got, want) != NULL);
    }
  flyte_outbox_close(o);
  rm_rf(dir);
  free(dir);
}

/* A taken record the syncer took out to write, slowly, and the worker's
 * next take intent: the intent must not reach the file first. Killed
 * right after that intent is written (its take request would go next),
 * the journal must show one lost take (the second), not two. */
static void test_intent_after_taken(void) {
  char *dir = tmpdir();
  pid_t pid = fork();
  if (pid == 0) {
    flyte_outbox *o = open_box(dir, FLYTE_OUTBOX_SYNC_ALWAYS);
    char err[300];
    uint64_t i1 = 0, t1 = 0, i2 = 0;
    if (o == NULL ||
        flyte_outbox_append_intent(o, "http://api/take", &i1, err,
                                   sizeof err) != 0)
      _exit(2);
    flyte_outbox_wait(o, i1);
    atomic_store(&slow_writes, 1);
    if (flyte_outbox_append_taken(o, i1, URL, "echo", "act-1", &t1, err,
                                  sizeof err) != 0)
      _exit(2);
    usleep(50 * 1000); /* the syncer has taken T1 out; its write is slow */
    flyte_outbox_flush(o);
    if (flyte_outbox_append_intent(o, "http://api/take", &i2, err,
                                   sizeof err) != 0)
      _exit(2);
    kill(getpid(), SIGKILL);
    _exit(3);
  }
  int status = 0;
  CHECK(waitpid(pid, &status, 0) == pid);
  CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  flyte_outbox *o = open_box(dir, FLYTE_OUTBOX_SYNC_ALWAYS);
  CHECK(o != NULL);
  if (o == NULL) return;
  seen s = {.keep = NULL};
  CHECK(recover(o, &s) == 1); /* act-1, taken: it ends FATAL */
  CHECK(strstr(s.got, "taken:act-1:") != NULL);
  CHECK(flyte_outbox_lost_takes(o) == 1);
  flyte_outbox_close(o);
  rm_rf(dir);
  free(dir);
}

/* ---- rotation and deletion ---------------------------------------------------- */

static void test_rotation(void) {
  char *dir = tmpdir();
  flyte_outbox *o = open_box(dir, FLYTE_OUTBOX_SYNC_OFF);
  flyte_outbox_set_segment_size(o, 4096);
  char err[300], body[200], action[32];
  memset(body, 'x', sizeof body - 1);
  body[sizeof body - 1] = '\0';

  /* one action that runs long, through thousands of others */
  uint64_t long_one = taken(o, 0, "long");
  for (int i = 0; i < 3000; i++) {
    snprintf(action, sizeof action, "a%d", i);
    uint64_t e = taken(o, 0, action), seq;
    CHECK(flyte_outbox_append_result(o, e, URL, "echo", action, body,
                                     strlen(body), &seq, err,
                                     sizeof err) == 0);
    flyte_outbox_done(o, (long)e);
  }
  flyte_outbox_stats st;
  flyte_outbox_stats_get(o, &st);
  CHECK(st.bytes > 100 * 4096); /* it rotated many times */
  /* the long one's segment, the one guarding it, the active one */
  CHECK(wait_segments(o, 3));
  CHECK(segments(dir, 0, NULL, 0) <= 3);

  /* a crash now: the long one alone comes back */
  pid_t pid = fork();
  if (pid == 0) _exit(0); /* nothing to do in the child: the parent's
                           * records are in the page cache as a crash
                           * leaves them */
  waitpid(pid, NULL, 0);
  char copy[600];
  snprintf(copy, sizeof copy, "cp -r '%s' '%s.copy'", dir, dir);
  CHECK(system(copy) == 0);

  flyte_outbox_done(o, (long)long_one);
  CHECK(wait_segments(o, 1));
  flyte_outbox_close(o);
  CHECK(segments(dir, 0, NULL, 0) == 0);

  /* the copy, taken before the long one was done, as a crash leaves it */
  snprintf(copy, sizeof copy, "%s.copy", dir);
  o = open_box(copy, FLYTE_OUTBOX_SYNC_OFF);
  seen s = {.keep = NULL};
  CHECK(recover(o, &s) == 1);
  CHECK_STR(s.got, "taken:long:;");
  flyte_outbox_close(o);
  CHECK(segments(copy, 0, NULL, 0) == 0);
  rm_rf(copy);
  rm_rf(dir);
  free(dir);
}

/* ---- a crash, and what the next start finds --------------------------------- */

/* In a child: appends, then dies with SIGKILL, its records unsynced. */
static void crash_after(const char *dir, void (*fn)(flyte_outbox *o)) {
  pid_t pid = fork();
  if (pid == 0) {
    flyte_outbox *o = open_box(dir, FLYTE_OUTBOX_SYNC_OFF);
    if (o == NULL) _exit(1);
    fn(o);
    kill(getpid(), SIGKILL);
  }
  int status;
  waitpid(pid, &status, 0);
  CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
}

static void some_work(flyte_outbox *o) {
  char err[300];
  uint64_t seq;
  uint64_t a = taken(o, 0, "A"); /* unfinished */
  uint64_t b = taken(o, 0, "B"); /* finished, result not delivered */
  flyte_outbox_append_result(o, b, URL, "echo", "B", "{\"event\":\"B\"}", 13,
                             &seq, err, sizeof err);
  uint64_t c = taken(o, 0, "C"); /* delivered */
  flyte_outbox_append_result(o, c, URL, "echo", "C", "{}", 2, &seq, err,
                             sizeof err);
  flyte_outbox_done(o, (long)c);
  flyte_outbox_append_event(o, "{\"event\":\"E\"}", 13, &seq, err,
                            sizeof err);
  /* take intents: answered by an action, by nothing, and one in flight */
  uint64_t i1, i2, i3;
  flyte_outbox_append_intent(o, "http://api/take", &i1, err, sizeof err);
  taken(o, i1, "D");
  flyte_outbox_append_intent(o, "http://api/take", &i2, err, sizeof err);
  flyte_outbox_done(o, (long)i2);
  flyte_outbox_append_intent(o, "http://api/take", &i3, err, sizeof err);
  (void)a;
}

static void test_crash(void) {
  char *dir = tmpdir();
  crash_after(dir, some_work);
  flyte_outbox *o = open_box(dir, FLYTE_OUTBOX_SYNC_ALWAYS);
  seen s = {.keep = "B"};
  CHECK(recover(o, &s) == 4);
  CHECK_STR(s.got, "taken:A:;result:B:{\"event\":\"B\"};event::{\"event\":\"E\"};"
                   "taken:D:;");
  CHECK(flyte_outbox_lost_takes(o) == 1);
  /* new entries are numbered after the old ones */
  uint64_t seq = taken(o, 0, "new");
  CHECK(seq > 10);
  flyte_outbox_close(o);

  /* what was kept, and the new one, come back; the lost take is not
   * counted twice */
  o = open_box(dir, FLYTE_OUTBOX_SYNC_ALWAYS);
  s.keep = NULL;
  CHECK(recover(o, &s) == 2);
  CHECK_STR(s.got, "result:B:{\"event\":\"B\"};taken:new:;");
  CHECK(flyte_outbox_lost_takes(o) == 0);
  flyte_outbox_close(o);
  CHECK(segments(dir, 0, NULL, 0) == 0);
  rm_rf(dir);
  free(dir);
}

/* ---- a torn tail, a corrupt record in the middle ------------------------------ */

static void three_takes(flyte_outbox *o) {
  taken(o, 0, "one");
  taken(o, 0, "two");
  taken(o, 0, "three");
}

typedef struct {
  size_t off[8], len[8];
  int n;
} offsets;

static void on_offset(void *ud, const flyte_journal_record *r, size_t off) {
  offsets *o = ud;
  size_t len = 12 + 28;
  for (int i = 0; i < r->nstr; i++) len += 4 + r->len[i];
  if (o->n < 8) {
    o->off[o->n] = off;
    o->len[o->n++] = len;
  }
}

/* Where the records of a segment file are. */
static offsets record_offsets(const char *path) {
  offsets o = {{0}, {0}, 0};
  FILE *f = fopen(path, "rb");
  static unsigned char buf[8 << 20];
  size_t n = f ? fread(buf, 1, sizeof buf, f) : 0;
  if (f) fclose(f);
  flyte_journal_scan(buf, n, on_offset, NULL, &o);
  return o;
}

static void zero_at(const char *path, size_t off, size_t n) {
  char z[64] = {0};
  int fd = open(path, O_WRONLY);
  CHECK(n <= sizeof z && pwrite(fd, z, n, (off_t)off) == (ssize_t)n);
  close(fd);
}

static void test_torn_and_corrupt(void) {
  char *dir = tmpdir(), path[700];
  seen s = {.keep = NULL};

  /* a byte of the second record spoilt: the first and third come back */
  crash_after(dir, three_takes);
  CHECK(segments(dir, 0, path, sizeof path) == 1);
  offsets at = record_offsets(path);
  CHECK(at.n == 3);
  int fd = open(path, O_RDWR);
  unsigned char b;
  CHECK(pread(fd, &b, 1, (off_t)at.off[1] + 40) == 1);
  b ^= 0xff;
  CHECK(pwrite(fd, &b, 1, (off_t)at.off[1] + 40) == 1);
  close(fd);
  flyte_outbox *o = open_box(dir, FLYTE_OUTBOX_SYNC_ALWAYS);
  CHECK(o != NULL);
  CHECK(recover(o, &s) == 2);
  CHECK_STR(s.got, "taken:one:;taken:three:;");
  flyte_outbox_close(o);
  CHECK(segments(dir, 0, NULL, 0) == 0);

  /* the last record cut short, as a crash in the middle of a write leaves
   * it: in allocated space (zeros), or at the end of the file */
  for (int cut = 0; cut < 2; cut++) {
    crash_after(dir, three_takes);
    CHECK(segments(dir, 0, path, sizeof path) == 1);
    at = record_offsets(path);
    CHECK(at.n == 3);
    if (cut)
      CHECK(truncate(path, (off_t)(at.off[2] + at.len[2] - 7)) == 0);
    else
      zero_at(path, at.off[2] + at.len[2] - 7, 7);
    o = open_box(dir, FLYTE_OUTBOX_SYNC_ALWAYS);
    CHECK(recover(o, &s) == 2);
    CHECK_STR(s.got, "taken:one:;taken:two:;");
    flyte_outbox_close(o);
    CHECK(segments(dir, 0, NULL, 0) == 0);
  }

  /* garbage where a segment should be: still starts, and works */
  snprintf(path, sizeof path, "%s/slot-0/journal-0000000007.log", dir);
  FILE *f = fopen(path, "w");
  fputs("this is not a journal at all", f);
  fclose(f);
  o = open_box(dir, FLYTE_OUTBOX_SYNC_ALWAYS);
  CHECK(o != NULL);
  CHECK(recover(o, &s) == 0);
  CHECK(taken(o, 0, "x") > 0);
  flyte_outbox_close(o);
  rm_rf(dir);
  free(dir);
}

/* ---- a dead host's slot ---------------------------------------------------- */

static void test_dead_slot(void) {
  char *dir = tmpdir();
  flyte_outbox *a = open_box(dir, FLYTE_OUTBOX_SYNC_ALWAYS);
  flyte_outbox *b = open_box(dir, FLYTE_OUTBOX_SYNC_ALWAYS);
  CHECK(a && b);
  uint64_t i;
  char err[300];
  taken(b, 0, "b-unfinished");
  flyte_outbox_append_intent(b, "http://api/take", &i, err, sizeof err);
  /* a live host's slot is left alone */
  seen s = {.keep = NULL};
  CHECK(recover(a, &s) == 0);
  flyte_outbox_close(b); /* as if it died: what it owes stays */
  CHECK(recover(a, &s) == 1);
  CHECK_STR(s.got, "taken:b-unfinished:;");
  CHECK(flyte_outbox_lost_takes(a) == 1);
  CHECK(segments(dir, 1, NULL, 0) == 0);
  flyte_outbox_close(a);
  rm_rf(dir);
  free(dir);
}

/* ---- the old format ------------------------------------------------------------ */

static void write_file(const char *dir, const char *name, const char *text) {
  char path[600];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "w");
  fputs(text, f);
  fclose(f);
}

static void test_old_format(void) {
  char *dir = tmpdir(), slot[600], slot1[600], names[600];
  snprintf(slot, sizeof slot, "%s/slot-0", dir);
  snprintf(slot1, sizeof slot1, "%s/slot-1", dir);
  mkdir(slot, 0700);
  mkdir(slot1, 0700);
  write_file(slot, "000000000001-a.json",
             "{\"kind\":\"taken\",\"result_url\":\"" URL "\",\"command\":"
             "\"echo\",\"action\":\"7\"}");
  write_file(slot, "000000000002-e.json",
             "{\"kind\":\"event\",\"body\":\"{\\\"event\\\":\\\"Old\\\"}\"}");
  write_file(slot, "000000000003-a.json.tmp", "{\"kind\":\"ta");
  write_file(slot, "000000000004-a.json", "{half an entr");
  write_file(slot1, "000000000009-a.json",
             "{\"kind\":\"result\",\"result_url\":\"" URL "\",\"command\":"
             "\"echo\",\"action\":\"9\",\"body\":\"{}\"}");

  flyte_outbox *o = open_box(dir, FLYTE_OUTBOX_SYNC_ALWAYS);
  seen s = {.keep = "Old"}; /* the event is kept: into the journal */
  CHECK(recover(o, &s) == 3);
  CHECK_STR(s.got, "taken:7:;event::{\"event\":\"Old\"};result:9:{};");
  flyte_outbox_close(o);
  listing(dir, 0, names, sizeof names);
  CHECK(strstr(names, ".json ") == NULL && strstr(names, ".tmp") == NULL);
  CHECK(strstr(names, "000000000004-a.json.corrupt") != NULL);
  CHECK(strstr(names, "journal-") != NULL);
  listing(dir, 1, names, sizeof names);
  CHECK_STR(names, "");

  o = open_box(dir, FLYTE_OUTBOX_SYNC_ALWAYS);
  s.keep = NULL;
  CHECK(recover(o, &s) == 1);
  CHECK_STR(s.got, "event::{\"event\":\"Old\"};");
  flyte_outbox_close(o);
  listing(dir, 0, names, sizeof names);
  CHECK_STR(names, "000000000004-a.json.corrupt");
  rm_rf(dir);
  free(dir);
}

/* ---- a randomized run against a model ----------------------------------------- */

/* Each round runs in a child: it opens the outbox, checks that recovery
 * hands out exactly what the model says is owed, delivers some of it,
 * appends and finishes entries at random over tiny segments (so that
 * segments rotate and are deleted in any order), then stops cleanly or
 * dies by SIGKILL. The model goes from round to round in a file. */

#define MODEL_CAP 2048
#define MODEL_LIVE 48

typedef struct {
  uint64_t id;
  char name[16];
  char body[24];
  char kind; /* 'T', 'R', 'E' */
  char live;
} model_entry;

typedef struct {
  uint64_t rng;
  int n, failures;
  model_entry m[MODEL_CAP];
} model_state;

static unsigned rnd(model_state *ms, unsigned n) {
  ms->rng ^= ms->rng << 13;
  ms->rng ^= ms->rng >> 7;
  ms->rng ^= ms->rng << 17;
  return (unsigned)(ms->rng % n);
}

static int live_count(const model_state *ms) {
  int live = 0;
  for (int i = 0; i < ms->n; i++) live += ms->m[i].live;
  return live;
}

static void random_ops(flyte_outbox *o, model_state *ms, int ops) {
  char err[300];
  for (int k = 0; k < ops; k++) {
    unsigned op = rnd(ms, 10);
    uint64_t seq;
    int room = ms->n < MODEL_CAP && live_count(ms) < MODEL_LIVE;
    if (op < 4 && room) {
      model_entry *m = &ms->m[ms->n++];
      snprintf(m->name, sizeof m->name, "m%d", ms->n);
      m->live = 1;
      if (op < 3) {
        m->kind = 'T';
        m->id = taken(o, 0, m->name);
      } else {
        m->kind = 'E';
        memcpy(m->body, m->name, sizeof m->name);
        CHECK(flyte_outbox_append_event(o, m->body, strlen(m->body), &m->id,
                                        err, sizeof err) == 0);
      }
    } else if (op < 6 && ms->n) {
      model_entry *m = &ms->m[rnd(ms, (unsigned)ms->n)];
      if (!m->live || m->kind == 'E') continue;
      m->kind = 'R';
      char body[sizeof m->body];
      snprintf(body, sizeof body, "%.15s-%u", m->name, rnd(ms, 1000));
      memcpy(m->body, body, sizeof body);
      CHECK(flyte_outbox_append_result(o, m->id, URL, "echo", m->name,
                                       m->body, strlen(m->body), &seq, err,
                                       sizeof err) == 0);
    } else if (op < 9 && ms->n) {
      model_entry *m = &ms->m[rnd(ms, (unsigned)ms->n)];
      if (!m->live) continue;
      m->live = 0;
      flyte_outbox_done(o, (long)m->id);
    } else {
      uint64_t i;
      CHECK(flyte_outbox_append_intent(o, "http://api/take", &i, err,
                                       sizeof err) == 0);
      if (rnd(ms, 2)) {
        flyte_outbox_done(o, (long)i); /* the take brought nothing */
      } else { /* an action, done at once */
        uint64_t t = taken(o, i, "via-intent");
        flyte_outbox_done(o, (long)t);
      }
    }
  }
}

static void model_want(const model_state *ms, char *want, size_t n) {
  want[0] = '\0';
  for (int i = 0; i < ms->n; i++) {
    const model_entry *m = &ms->m[i];
    if (!m->live) continue;
    size_t len = strlen(want);
    snprintf(want + len, n - len, "%s:%s:%s;",
             m->kind == 'T' ? "taken" : m->kind == 'R' ? "result" : "event",
             m->kind == 'E' ? "" : m->name, m->kind == 'T' ? "" : m->body);
  }
}

static void model_round(const char *dir, const char *file, int round) {
  model_state *ms = calloc(1, sizeof *ms);
  FILE *f = fopen(file, "rb");
  if (f) {
    if (fread(ms, sizeof *ms, 1, f) != 1) ms->failures++;
    fclose(f);
  } else {
    ms->rng = 0x9E3779B97F4A7C15ull;
  }
  flyte_outbox *o = open_box(dir, FLYTE_OUTBOX_SYNC_OFF);
  if (o == NULL) _exit(1);
  flyte_outbox_set_segment_size(o, 200 + rnd(ms, 1500));
  seen s = {.keep = ""}; /* keep all: then done some by id */
  int before = test_failures;
  recover(o, &s);
  char want[8192];
  model_want(ms, want, sizeof want);
  if (strcmp(want, s.got) != 0) {
    fprintf(stderr, "round %d: want %s\n          got  %s\n", round, want,
            s.got);
    test_failures++;
  }
  for (int i = 0; i < ms->n; i++)
    if (ms->m[i].live && rnd(ms, 3) == 0) {
      ms->m[i].live = 0;
      flyte_outbox_done(o, (long)ms->m[i].id);
    }
  random_ops(o, ms, 300);
  int crash = rnd(ms, 3) != 0;
  ms->failures += test_failures - before;
  f = fopen(file, "wb");
  if (f == NULL || fwrite(ms, sizeof *ms, 1, f) != 1) _exit(1);
  fclose(f);
  if (crash) kill(getpid(), SIGKILL);
  flyte_outbox_close(o);
  free(ms);
  _exit(0);
}

static void test_model(void) {
  char *dir = tmpdir(), file[600];
  snprintf(file, sizeof file, "%s.model", dir);
  unlink(file);
  for (int round = 0; round < 40; round++) {
    pid_t pid = fork();
    if (pid == 0) model_round(dir, file, round);
    int status;
    waitpid(pid, &status, 0);
    CHECK(WIFSIGNALED(status) || (WIFEXITED(status) && !WEXITSTATUS(status)));
  }
  model_state *ms = calloc(1, sizeof *ms);
  FILE *f = fopen(file, "rb");
  CHECK(f && fread(ms, sizeof *ms, 1, f) == 1);
  if (f) fclose(f);
  CHECK(ms->failures == 0);
  CHECK(ms->n > 500);
  /* at most a few segments are left: those the live entries pin */
  CHECK(segments(dir, 0, NULL, 0) <= live_count(ms) + 3);
  free(ms);
  unlink(file);
  rm_rf(dir);
  free(dir);
}

/* ---- the micro-benchmark ---------------------------------------------------- */

typedef struct {
  flyte_outbox *o;
  double until;
  long actions;
} bench_arg;

static void *bench_worker(void *arg) {
  bench_arg *b = arg;
  char err[300];
  const char *body = "{\"event\":\"Echoed\",\"payload\":{\"n\":1},"
                     "\"createdAt\":\"2026-11-28T20:02:34.123456Z\"}";
  while (now() < b->until) {
    long e = flyte_outbox_taken(b->o, URL, "echo", "123456", err, sizeof err);
    flyte_outbox_result(b->o, e, URL, "echo", "123456", body, strlen(body),
                        err, sizeof err);
    flyte_outbox_done(b->o, e);
    b->actions++;
  }
  return NULL;
}

static int bench(int threads, double seconds) {
  for (int sync = 1; sync >= 0; sync--) {
    char *dir = tmpdir();
    flyte_outbox *o = open_box(dir, sync);
    pthread_t t[256];
    bench_arg a[256];
    double start = now();
    for (int i = 0; i < threads; i++) {
      a[i] = (bench_arg){o, start + seconds, 0};
      pthread_create(&t[i], NULL, bench_worker, &a[i]);
    }
    long actions = 0;
    for (int i = 0; i < threads; i++) {
      pthread_join(t[i], NULL);
      actions += a[i].actions;
    }
    double took = now() - start;
    flyte_outbox_stats st;
    flyte_outbox_stats_get(o, &st);
    printf("sync %-6s %3d threads: %8.0f actions/s (taken+result+done, "
           "blocking), %8.0f records/s, %7.0f fsyncs/s, %5.1f records a "
           "sync\n",
           sync ? "always" : "off", threads, actions / took,
           st.records / took, st.syncs / took,
           st.syncs ? (double)st.records / (double)st.syncs : 0.0);
    flyte_outbox_close(o);
    rm_rf(dir);
    free(dir);
  }
  return 0;
}

int main(int argc, char **argv) {
  test_thread = pthread_self();
  flyte_log_setup(FLYTE_LOG_ERROR, FLYTE_LOG_TEXT);
  if (argc > 1 && strcmp(argv[1], "bench") == 0)
    return bench(argc > 2 ? atoi(argv[2]) : 8,
                 argc > 3 ? atof(argv[3]) : 2.0);
  if (getenv("FLYTE_TEST_VERBOSE")) flyte_log_setup(FLYTE_LOG_DEBUG, 0);
  test_format();
  test_group_commit();
  test_write_behind();
  test_unlocked_writes();
  test_intent_after_taken();
  test_rotation();
  test_crash();
  test_torn_and_corrupt();
  test_dead_slot();
  test_old_format();
  test_model();
  TEST_DONE();
}
