/* outbox.c - what the host owes the flyte-api, on disk.
 *
 * Layout: DIR/slot-N/lock (flock'ed by the host using the slot) and
 * DIR/slot-N/<seq>-<a|e>.json entries. An entry is written to a temporary
 * file, flushed with fdatasync, then renamed over its name, so a crash leaves
 * either the old entry or the new one, never half of one.
 */
#include "outbox.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

#define MAX_SLOTS 256

struct flyte_outbox {
  char *dir;  /* the outbox */
  char *slot; /* DIR/slot-N */
  int lock_fd;
  pthread_mutex_t mu;
  long next; /* entry numbers */
};

static char *path_join(const char *a, const char *b) {
  size_t n = strlen(a) + strlen(b) + 2;
  char *p = malloc(n);
  if (p) snprintf(p, n, "%s/%s", a, b);
  return p;
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

flyte_outbox *flyte_outbox_open(const char *dir, char *err, size_t errlen) {
  flyte_outbox *o = calloc(1, sizeof *o);
  if (o == NULL || (o->dir = strdup(dir)) == NULL) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }
  o->lock_fd = -1;
  pthread_mutex_init(&o->mu, NULL);
  if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
    snprintf(err, errlen, "cannot create %s: %s", dir, strerror(errno));
    goto fail;
  }
  for (int n = 0; n < MAX_SLOTS && o->lock_fd < 0; n++) {
    char name[32];
    snprintf(name, sizeof name, "slot-%d", n);
    char *slot = path_join(dir, name);
    if (slot == NULL) break;
    if ((mkdir(slot, 0700) == 0 || errno == EEXIST) &&
        (o->lock_fd = lock_slot(slot)) >= 0) {
      o->slot = slot;
    } else {
      free(slot);
    }
  }
  if (o->lock_fd < 0) {
    snprintf(err, errlen, "no free slot in %s (%s)", dir,
             errno ? strerror(errno) : "all in use");
    goto fail;
  }
  /* number new entries after any a dead host left in this slot, so that
   * none is overwritten before recovery has delivered it */
  DIR *d = opendir(o->slot);
  struct dirent *de;
  while (d && (de = readdir(d)) != NULL) {
    long n = strtol(de->d_name, NULL, 10);
    if (n > o->next) o->next = n;
  }
  if (d) closedir(d);
  return o;
fail:
  flyte_outbox_close(o);
  return NULL;
}

void flyte_outbox_close(flyte_outbox *o) {
  if (o == NULL) return;
  if (o->lock_fd >= 0) close(o->lock_fd); /* releases the flock */
  pthread_mutex_destroy(&o->mu);
  free(o->dir);
  free(o->slot);
  free(o);
}

static void entry_name(char *buf, size_t n, long entry, char kind) {
  snprintf(buf, n, "%012ld-%c.json", entry, kind);
}

/* Writes json to SLOT/name crash-safely. 0 or -1 with a message. */
static int write_entry(flyte_outbox *o, const char *name, json_t *json,
                       char *err, size_t errlen) {
  char *text = json_dumps(json, JSON_COMPACT);
  char tmp[64];
  snprintf(tmp, sizeof tmp, "%s.tmp", name);
  char *tmp_path = path_join(o->slot, tmp), *path = path_join(o->slot, name);
  int rc = -1, fd = -1;
  if (!text || !tmp_path || !path) {
    snprintf(err, errlen, "out of memory");
    goto cleanup;
  }
  fd = open(tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  size_t len = strlen(text), done = 0;
  while (fd >= 0 && done < len) {
    ssize_t w = write(fd, text + done, len - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) break;
    done += (size_t)w;
  }
  if (fd < 0 || done < len || fdatasync(fd) != 0 || close(fd) != 0) {
    snprintf(err, errlen, "cannot write %s: %s", tmp_path, strerror(errno));
    if (fd >= 0) close(fd);
    unlink(tmp_path);
    fd = -1;
    goto cleanup;
  }
  fd = -1;
  if (rename(tmp_path, path) != 0) {
    snprintf(err, errlen, "cannot rename %s: %s", tmp_path, strerror(errno));
    unlink(tmp_path);
    goto cleanup;
  }
  rc = 0;
cleanup:
  free(text);
  free(tmp_path);
  free(path);
  return rc;
}

long flyte_outbox_taken(flyte_outbox *o, const char *result_url,
                        const char *command, const char *action, char *err,
                        size_t errlen) {
  pthread_mutex_lock(&o->mu);
  long entry = ++o->next;
  pthread_mutex_unlock(&o->mu);
  char name[40];
  entry_name(name, sizeof name, entry, 'a');
  json_t *j = json_pack("{s:s, s:s, s:s, s:s}", "kind", "taken", "result_url",
                        result_url, "command", command, "action", action);
  int rc = j ? write_entry(o, name, j, err, errlen) : -1;
  json_decref(j);
  return rc == 0 ? entry : -1;
}

int flyte_outbox_result(flyte_outbox *o, long entry, const char *result_url,
                        const char *command, const char *action,
                        const char *body, size_t len, char *err,
                        size_t errlen) {
  char name[40];
  entry_name(name, sizeof name, entry, 'a');
  json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s%}", "kind", "result",
                        "result_url", result_url, "command", command,
                        "action", action, "body", body, len);
  int rc = j ? write_entry(o, name, j, err, errlen) : -1;
  json_decref(j);
  return rc;
}

long flyte_outbox_event(flyte_outbox *o, const char *body, size_t len,
                        char *err, size_t errlen) {
  pthread_mutex_lock(&o->mu);
  long entry = ++o->next;
  pthread_mutex_unlock(&o->mu);
  char name[40];
  entry_name(name, sizeof name, entry, 'e');
  json_t *j = json_pack("{s:s, s:s%}", "kind", "event", "body", body, len);
  int rc = j ? write_entry(o, name, j, err, errlen) : -1;
  json_decref(j);
  return rc == 0 ? entry : -1;
}

void flyte_outbox_done(flyte_outbox *o, long entry) {
  char name[40];
  for (const char *k = "ae"; *k; k++) {
    entry_name(name, sizeof name, entry, *k);
    char *path = path_join(o->slot, name);
    if (path && unlink(path) == 0) {
      free(path);
      return;
    }
    free(path);
  }
}

static int compare_names(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Recovers the entries of one slot directory, oldest first. */
static int recover_slot(const char *slot,
                        int (*fn)(void *ud, const flyte_outbox_entry *e),
                        void *ud) {
  DIR *d = opendir(slot);
  if (d == NULL) return 0;
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
    if (n == cap) {
      cap = cap ? cap * 2 : 16;
      char **grown = realloc(names, cap * sizeof *names);
      if (grown == NULL) break;
      names = grown;
    }
    if ((names[n] = strdup(de->d_name)) != NULL) n++;
  }
  closedir(d);
  if (n) qsort(names, n, sizeof *names, compare_names);
  int seen = 0;
  for (size_t i = 0; i < n; i++) {
    char *path = path_join(slot, names[i]);
    json_error_t je;
    json_t *j = path ? json_load_file(path, 0, &je) : NULL;
    flyte_outbox_entry e = {
        json_string_value(json_object_get(j, "kind")),
        json_string_value(json_object_get(j, "result_url")),
        json_string_value(json_object_get(j, "command")),
        json_string_value(json_object_get(j, "action")),
        json_string_value(json_object_get(j, "body"))};
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
      seen++;
      if (fn(ud, &e) == 0) unlink(path);
    }
    json_decref(j);
    free(path);
    free(names[i]);
  }
  free(names);
  return seen;
}

int flyte_outbox_recover(flyte_outbox *o,
                         int (*fn)(void *ud, const flyte_outbox_entry *e),
                         void *ud) {
  int seen = recover_slot(o->slot, fn, ud);
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
    if (strcmp(slot, o->slot) != 0) {
      int fd = lock_slot(slot); /* a live host holds its own: skip it */
      if (fd >= 0) {
        seen += recover_slot(slot, fn, ud);
        close(fd);
      }
    }
    free(slot);
  }
  return seen;
}
