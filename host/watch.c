/* watch.c - watching a set of files for changes, with inotify.
 *
 * One inotify watch per directory that holds a watched file; an event is a
 * change when its name is one of the watched files of that directory. An
 * eventfd lets another thread wake the waiting one.
 */
#include "watch.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#define EVENTS                                                              \
  (IN_CLOSE_WRITE | IN_MODIFY | IN_MOVED_TO | IN_CREATE | IN_DELETE |       \
   IN_MOVED_FROM | IN_ATTRIB)

typedef struct {
  int wd;
  char *dir;  /* as given */
  char *name; /* the file's name in dir */
  char *path; /* dir/name, as given */
} entry;

struct flyte_watch {
  int fd, wake;
  entry *entries;
  size_t n;
};

flyte_watch *flyte_watch_new(char *err, size_t errlen) {
  flyte_watch *w = calloc(1, sizeof *w);
  if (w == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  w->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (w->fd < 0 || w->wake < 0) {
    snprintf(err, errlen, "inotify: %s", strerror(errno));
    flyte_watch_free(w);
    return NULL;
  }
  return w;
}

static void clear(flyte_watch *w) {
  for (size_t i = 0; i < w->n; i++) {
    /* A directory may hold several files: remove its watch once. */
    int first = 1;
    for (size_t k = 0; k < i; k++)
      if (w->entries[k].wd == w->entries[i].wd) first = 0;
    if (first && w->entries[i].wd >= 0) inotify_rm_watch(w->fd, w->entries[i].wd);
    free(w->entries[i].dir);
    free(w->entries[i].name);
    free(w->entries[i].path);
  }
  free(w->entries);
  w->entries = NULL;
  w->n = 0;
}

void flyte_watch_free(flyte_watch *w) {
  if (w == NULL) return;
  clear(w);
  if (w->fd >= 0) close(w->fd);
  if (w->wake >= 0) close(w->wake);
  free(w);
}

int flyte_watch_set(flyte_watch *w, char *const *files, size_t n, char *err,
                    size_t errlen) {
  clear(w);
  w->entries = calloc(n ? n : 1, sizeof *w->entries);
  if (w->entries == NULL) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  for (size_t i = 0; i < n; i++) {
    entry *e = &w->entries[i];
    const char *slash = strrchr(files[i], '/');
    e->dir = slash ? strndup(files[i], (size_t)(slash - files[i]) + (slash == files[i]))
                   : strdup(".");
    e->name = strdup(slash ? slash + 1 : files[i]);
    e->path = strdup(files[i]);
    w->n++;
    if (!e->dir || !e->name || !e->path) {
      snprintf(err, errlen, "out of memory");
      return -1;
    }
    /* inotify gives the same wd for a directory watched twice */
    e->wd = inotify_add_watch(w->fd, e->dir, EVENTS);
    if (e->wd < 0) {
      snprintf(err, errlen, "cannot watch %s: %s", e->dir, strerror(errno));
      return -1;
    }
  }
  return 0;
}

void flyte_watch_wake(flyte_watch *w) {
  uint64_t one = 1;
  ssize_t rc = write(w->wake, &one, sizeof one);
  (void)rc;
}

int flyte_watch_wait(flyte_watch *w, double timeout, const char **which) {
  struct pollfd fds[2] = {{w->fd, POLLIN, 0}, {w->wake, POLLIN, 0}};
  int ms = timeout < 0 ? -1 : (int)(timeout * 1000 + 0.5);
  int rc = poll(fds, 2, ms);
  if (rc <= 0) return 0;
  if (fds[1].revents & POLLIN) {
    uint64_t v;
    ssize_t got = read(w->wake, &v, sizeof v);
    (void)got;
    return 0;
  }
  char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
  int changed = 0;
  for (;;) {
    ssize_t len = read(w->fd, buf, sizeof buf);
    if (len <= 0) break;
    for (char *p = buf; p < buf + len;) {
      struct inotify_event *ev = (struct inotify_event *)p;
      p += sizeof *ev + ev->len;
      if (ev->len == 0) continue;
      for (size_t i = 0; i < w->n; i++)
        if (w->entries[i].wd == ev->wd &&
            strcmp(w->entries[i].name, ev->name) == 0) {
          changed = 1;
          *which = w->entries[i].path;
        }
    }
  }
  return changed;
}
