/* fuzz_journal.c - libFuzzer target for the outbox's journal reader
 * (outbox.c).
 *
 * The bytes are read as a segment: flyte_journal_scan never reads out of
 * bounds, and what it reports tiles the input in order (records and bad
 * stretches, a bad stretch at the end called a tail and no other, zeros
 * left after the last: allocated space), each record encoding back to
 * exactly its bytes.
 *
 * Then they go on disk as a slot's two segments (cut where the first byte
 * says) and an outbox opens the slot, hands out what it finds (keeping
 * every other entry), and closes; opened again it must hand out exactly
 * the entries kept, in the same order, and no take intent again; once
 * those are delivered too, no segment is left.
 */
#include "../log.h"
#include "../outbox.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void check(int ok, const char *what) {
  if (ok) return;
  fprintf(stderr, "fuzz_journal: %s\n", what);
  abort();
}

/* ---- the reader ------------------------------------------------------------ */

typedef struct {
  const unsigned char *buf;
  size_t len, pos;
  int ended; /* a tail was reported */
} tiling;

static void on_rec(void *ud, const flyte_journal_record *r, size_t off) {
  tiling *t = ud;
  check(!t->ended, "a record after the tail");
  check(off == t->pos, "a record not where the last one ended");
  for (int i = 0; i < r->nstr; i++)
    check((const unsigned char *)r->str[i] >= t->buf + off &&
              (const unsigned char *)r->str[i] + r->len[i] <= t->buf + t->len,
          "a string outside the input");
  size_t n;
  unsigned char *again = flyte_journal_encode(r, &n);
  check(again != NULL, "a record read that does not encode");
  check(n <= t->len - off && memcmp(again, t->buf + off, n) == 0,
        "a record that does not encode to its bytes");
  free(again);
  t->pos = off + n;
}

static int zeros(const unsigned char *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i]) return 0;
  return 1;
}

static void on_bad(void *ud, size_t off, size_t n, int tail) {
  tiling *t = ud;
  check(!t->ended, "a bad stretch after the tail");
  check(off == t->pos && n > 0 && n <= t->len - off,
        "a bad stretch not where the last one ended");
  t->pos = off + n;
  check(!tail || zeros(t->buf + t->pos, t->len - t->pos),
        "a tail before the end");
  check(tail || t->pos < t->len, "no tail at the end");
  check(t->buf[t->pos - 1] != 0 || !tail, "a tail ending in a zero");
  t->ended = tail;
}

static void scan(const unsigned char *data, size_t size) {
  tiling t = {data, size, 0, 0};
  if (size >= FLYTE_JOURNAL_HEADER_LEN &&
      memcmp(data, FLYTE_JOURNAL_HEADER, FLYTE_JOURNAL_HEADER_LEN) == 0)
    t.pos = FLYTE_JOURNAL_HEADER_LEN;
  flyte_journal_scan(data, size, on_rec, on_bad, &t);
  /* what is left is the zeros of space allocated for more */
  check(zeros(data + t.pos, size - t.pos),
        "the input is not all accounted for");
}

/* ---- recovery ---------------------------------------------------------------- */

static char dir[256], slot[300];

static void clear_slot(void) {
  DIR *d = opendir(slot);
  struct dirent *de;
  while (d && (de = readdir(d)) != NULL) {
    if (de->d_name[0] == '.' || strcmp(de->d_name, "lock") == 0) continue;
    char path[600];
    snprintf(path, sizeof path, "%s/%s", slot, de->d_name);
    unlink(path);
  }
  if (d) closedir(d);
}

static void cleanup(void) {
  clear_slot();
  char path[600];
  snprintf(path, sizeof path, "%s/lock", slot);
  unlink(path);
  rmdir(slot);
  rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  flyte_log_setup(FLYTE_LOG_OFF, FLYTE_LOG_TEXT);
  struct stat st;
  snprintf(dir, sizeof dir, "%s/fuzz-journal.XXXXXX",
           stat("/dev/shm", &st) == 0 ? "/dev/shm" : "/tmp");
  check(mkdtemp(dir) != NULL, "mkdtemp");
  snprintf(slot, sizeof slot, "%s/slot-0", dir);
  check(mkdir(slot, 0700) == 0, "mkdir");
  atexit(cleanup);
  return 0;
}

static void put(const char *name, const unsigned char *data, size_t size) {
  char path[600];
  snprintf(path, sizeof path, "%s/%s", slot, name);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  check(fd >= 0, "open");
  check(write(fd, data, size) == (ssize_t)size, "write");
  close(fd);
}

typedef struct {
  char *text;
  size_t len, cap;
  int n;
  int keep; /* keep every other entry */
} handed;

static void add(handed *h, const char *s) {
  size_t n = s ? strlen(s) + 1 : 1;
  if (h->len + n + 1 > h->cap) {
    h->cap = (h->len + n + 1) * 2;
    h->text = realloc(h->text, h->cap);
    check(h->text != NULL, "out of memory");
  }
  if (s) memcpy(h->text + h->len, s, n);
  else h->text[h->len] = '\x01'; /* NULL */
  h->len += n;
  h->text[h->len] = '\0';
}

static int collect(void *ud, const flyte_outbox_entry *e) {
  handed *h = ud;
  check(e->kind != NULL, "an entry without a kind");
  int taken = strcmp(e->kind, "taken") == 0;
  int result = strcmp(e->kind, "result") == 0;
  int event = strcmp(e->kind, "event") == 0;
  check(taken || result || event, "an entry of an unknown kind");
  check(event ? e->body != NULL : e->result_url && e->command,
        "an entry without its fields");
  check(!result || e->body != NULL, "a result without its body");
  int keep = h->keep && h->n % 2 == 1;
  h->n++;
  if (!h->keep || keep) {
    add(h, e->kind);
    add(h, e->result_url);
    add(h, e->command);
    add(h, e->action);
    add(h, e->body);
  }
  return keep ? -1 : 0;
}

static int segments_left(void) {
  DIR *d = opendir(slot);
  struct dirent *de;
  int n = 0;
  while (d && (de = readdir(d)) != NULL)
    n += strncmp(de->d_name, "journal-", 8) == 0;
  if (d) closedir(d);
  return n;
}

static void recover(const unsigned char *data, size_t size) {
  size_t cut = size ? data[0] % (size + 1) : 0;
  clear_slot();
  put("journal-0000000001.log", data, cut);
  put("journal-0000000002.log", data + cut, size - cut);

  char err[300];
  flyte_outbox *o = flyte_outbox_open(dir, FLYTE_OUTBOX_SYNC_OFF, err,
                                      sizeof err);
  check(o != NULL, "open");
  flyte_outbox_set_segment_size(o, 4096); /* the space allocated: small */
  handed first = {NULL, 0, 0, 0, 1};
  flyte_outbox_recover(o, collect, &first);
  flyte_outbox_close(o);

  o = flyte_outbox_open(dir, FLYTE_OUTBOX_SYNC_OFF, err, sizeof err);
  check(o != NULL, "open again");
  flyte_outbox_set_segment_size(o, 4096);
  handed second = {NULL, 0, 0, 0, 0};
  flyte_outbox_recover(o, collect, &second);
  check(flyte_outbox_lost_takes(o) == 0, "a lost take counted twice");
  flyte_outbox_close(o);
  check(first.len == second.len &&
            (first.len == 0 || memcmp(first.text, second.text, first.len) == 0),
        "what was kept is not what came back");
  check(segments_left() == 0, "segments left once all was delivered");
  free(first.text);
  free(second.text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  scan(data, size);
  recover(data, size);
  return 0;
}
