/* loop.c - an event loop per thread: timers, descriptors, libcurl transfers.
 *
 * epoll carries a tag and a descriptor in each event's data, never a
 * pointer: a callback may stop another watcher (or libcurl close a socket)
 * while the rest of the batch is still being dispatched, and a tag that
 * finds nothing is simply skipped.
 */
#include "loop.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define MAX_EVENTS 64

enum { TAG_WAKE = 1, TAG_CURL = 2, TAG_IO = 3 };

struct flyte_loop {
  int ep, wake_fd;
  CURLM *multi;
  double curl_due; /* monotonic; < 0: libcurl wants no timeout */
  flyte_timer **heap;
  size_t nheap, capheap;
  flyte_io **ios; /* by descriptor */
  size_t nios;
  flyte_loop_fn on_wake;
  void *on_wake_ud;
  double lag;
};

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t tag(int kind, int fd) {
  return (uint64_t)kind << 32 | (uint32_t)fd;
}

/* ---- timers: a binary min-heap on due ---------------------------------- */

static void heap_set(flyte_loop *l, size_t i, flyte_timer *t) {
  l->heap[i] = t;
  t->slot = i + 1;
}

static void sift_up(flyte_loop *l, size_t i) {
  flyte_timer *t = l->heap[i];
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (l->heap[parent]->due <= t->due) break;
    heap_set(l, i, l->heap[parent]);
    i = parent;
  }
  heap_set(l, i, t);
}

static void sift_down(flyte_loop *l, size_t i) {
  flyte_timer *t = l->heap[i];
  for (;;) {
    size_t child = 2 * i + 1;
    if (child >= l->nheap) break;
    if (child + 1 < l->nheap && l->heap[child + 1]->due < l->heap[child]->due)
      child++;
    if (t->due <= l->heap[child]->due) break;
    heap_set(l, i, l->heap[child]);
    i = child;
  }
  heap_set(l, i, t);
}

void flyte_timer_stop(flyte_loop *l, flyte_timer *t) {
  if (t->slot == 0) return;
  size_t i = t->slot - 1;
  t->slot = 0;
  flyte_timer *last = l->heap[--l->nheap];
  if (i == l->nheap) return;
  heap_set(l, i, last);
  sift_down(l, i);
  sift_up(l, last->slot - 1);
}

void flyte_timer_start(flyte_loop *l, flyte_timer *t, double due,
                       flyte_loop_fn fn, void *ud) {
  flyte_timer_stop(l, t);
  if (l->nheap == l->capheap) {
    size_t cap = l->capheap ? l->capheap * 2 : 64;
    flyte_timer **heap = realloc(l->heap, cap * sizeof *heap);
    if (heap == NULL) abort(); /* a few pointers: nothing to fall back on */
    l->heap = heap;
    l->capheap = cap;
  }
  t->due = due;
  t->fn = fn;
  t->ud = ud;
  heap_set(l, l->nheap++, t);
  sift_up(l, l->nheap - 1);
}

double flyte_loop_next_timer(const flyte_loop *l) {
  if (l->nheap == 0) return -1;
  double left = l->heap[0]->due - now();
  return left > 0 ? left : 0;
}

static void run_timers(flyte_loop *l) {
  double t0 = now();
  while (l->nheap > 0 && l->heap[0]->due <= t0) {
    flyte_timer *t = l->heap[0];
    flyte_timer_stop(l, t);
    if (t0 - t->due > l->lag) l->lag = t0 - t->due;
    t->fn(t->ud);
  }
}

double flyte_loop_take_lag(flyte_loop *l) {
  double lag = l->lag;
  l->lag = 0;
  return lag;
}

/* ---- descriptors --------------------------------------------------------- */

int flyte_io_start(flyte_loop *l, flyte_io *io, int fd, uint32_t events,
                   void (*fn)(flyte_io *, uint32_t), void *ud) {
  if ((size_t)fd >= l->nios) {
    size_t n = (size_t)fd + 64;
    flyte_io **ios = realloc(l->ios, n * sizeof *ios);
    if (ios == NULL) return -1;
    memset(ios + l->nios, 0, (n - l->nios) * sizeof *ios);
    l->ios = ios;
    l->nios = n;
  }
  struct epoll_event ev = {.events = events, .data.u64 = tag(TAG_IO, fd)};
  if (epoll_ctl(l->ep, EPOLL_CTL_ADD, fd, &ev) != 0) return -1;
  io->fd = fd;
  io->events = events;
  io->fn = fn;
  io->ud = ud;
  l->ios[fd] = io;
  return 0;
}

int flyte_io_modify(flyte_loop *l, flyte_io *io, uint32_t events) {
  struct epoll_event ev = {.events = events, .data.u64 = tag(TAG_IO, io->fd)};
  if (epoll_ctl(l->ep, EPOLL_CTL_MOD, io->fd, &ev) != 0) return -1;
  io->events = events;
  return 0;
}

void flyte_io_stop(flyte_loop *l, flyte_io *io) {
  if (io->fd < 0 || (size_t)io->fd >= l->nios || l->ios[io->fd] != io) return;
  epoll_ctl(l->ep, EPOLL_CTL_DEL, io->fd, NULL);
  l->ios[io->fd] = NULL;
  io->fd = -1;
}

/* ---- libcurl ------------------------------------------------------------- */

/* CURLMOPT_SOCKETFUNCTION: watch what libcurl asks for. socketp is only a
 * mark that the socket is in the epoll set already. */
static int on_socket(CURL *easy, curl_socket_t s, int what, void *userp,
                     void *socketp) {
  (void)easy;
  flyte_loop *l = userp;
  if (what == CURL_POLL_REMOVE) {
    epoll_ctl(l->ep, EPOLL_CTL_DEL, s, NULL);
    curl_multi_assign(l->multi, s, NULL);
    return 0;
  }
  struct epoll_event ev = {.data.u64 = tag(TAG_CURL, s)};
  if (what & CURL_POLL_IN) ev.events |= EPOLLIN;
  if (what & CURL_POLL_OUT) ev.events |= EPOLLOUT;
  int op = socketp ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
  if (epoll_ctl(l->ep, op, s, &ev) != 0) {
    op = errno == EEXIST ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (epoll_ctl(l->ep, op, s, &ev) != 0) return -1;
  }
  if (socketp == NULL) curl_multi_assign(l->multi, s, l);
  return 0;
}

/* CURLMOPT_TIMERFUNCTION: only note when; the loop acts on it (calling
 * libcurl back from here is not allowed: curl#3537). */
static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp) {
  (void)multi;
  flyte_loop *l = userp;
  l->curl_due = timeout_ms < 0 ? -1 : now() + (double)timeout_ms / 1000;
  return 0;
}

CURLM *flyte_loop_multi(flyte_loop *l) { return l->multi; }

void flyte_loop_set_connections(flyte_loop *l, long most) {
  curl_multi_setopt(l->multi, CURLMOPT_MAXCONNECTS, most);
}

int flyte_loop_add(flyte_loop *l, CURL *easy) {
  return curl_multi_add_handle(l->multi, easy) == CURLM_OK ? 0 : -1;
}

void flyte_loop_remove(flyte_loop *l, CURL *easy) {
  curl_multi_remove_handle(l->multi, easy);
}

/* Runs done for every transfer that has ended (off the multi first, so
 * that done may reuse or free the easy handle). */
static void finish_transfers(flyte_loop *l) {
  CURLMsg *msg;
  int left;
  while ((msg = curl_multi_info_read(l->multi, &left)) != NULL) {
    if (msg->msg != CURLMSG_DONE) continue;
    CURL *easy = msg->easy_handle;
    CURLcode result = msg->data.result;
    flyte_transfer *t = NULL;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&t);
    curl_multi_remove_handle(l->multi, easy);
    if (t && t->done) t->done(t, result);
  }
}

/* ---- the loop ------------------------------------------------------------- */

flyte_loop *flyte_loop_new(char *err, size_t errlen) {
  flyte_loop *l = calloc(1, sizeof *l);
  if (l == NULL) goto nomem;
  l->ep = l->wake_fd = -1;
  l->curl_due = -1;
  l->ep = epoll_create1(EPOLL_CLOEXEC);
  l->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (l->ep < 0 || l->wake_fd < 0) {
    snprintf(err, errlen, "cannot create an event loop: %s", strerror(errno));
    goto fail;
  }
  struct epoll_event ev = {.events = EPOLLIN,
                           .data.u64 = tag(TAG_WAKE, l->wake_fd)};
  if (epoll_ctl(l->ep, EPOLL_CTL_ADD, l->wake_fd, &ev) != 0) {
    snprintf(err, errlen, "cannot create an event loop: %s", strerror(errno));
    goto fail;
  }
  if ((l->multi = curl_multi_init()) == NULL ||
      curl_multi_setopt(l->multi, CURLMOPT_SOCKETFUNCTION, on_socket) ||
      curl_multi_setopt(l->multi, CURLMOPT_SOCKETDATA, l) ||
      curl_multi_setopt(l->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer) ||
      curl_multi_setopt(l->multi, CURLMOPT_TIMERDATA, l)) {
    snprintf(err, errlen, "cannot create a libcurl multi handle");
    goto fail;
  }
  return l;
nomem:
  snprintf(err, errlen, "out of memory");
fail:
  flyte_loop_free(l);
  return NULL;
}

void flyte_loop_free(flyte_loop *l) {
  if (l == NULL) return;
  if (l->multi) curl_multi_cleanup(l->multi);
  if (l->ep >= 0) close(l->ep);
  if (l->wake_fd >= 0) close(l->wake_fd);
  free(l->heap);
  free(l->ios);
  free(l);
}

void flyte_loop_wake(flyte_loop *l) {
  uint64_t one = 1;
  ssize_t n = write(l->wake_fd, &one, sizeof one);
  (void)n; /* EAGAIN: the counter is full, so a wake is pending anyway */
}

void flyte_loop_on_wake(flyte_loop *l, flyte_loop_fn fn, void *ud) {
  l->on_wake = fn;
  l->on_wake_ud = ud;
}

int flyte_loop_run_once(flyte_loop *l, double timeout) {
  struct epoll_event evs[MAX_EVENTS];
  double wait = timeout;
  double t = flyte_loop_next_timer(l);
  if (t >= 0 && (wait < 0 || t < wait)) wait = t;
  if (l->curl_due >= 0) {
    double c = l->curl_due - now();
    if (c < 0) c = 0;
    if (wait < 0 || c < wait) wait = c;
  }
  if (wait > 3600) wait = 3600; /* an int of milliseconds */
  int ms = wait < 0 ? -1 : (int)ceil(wait * 1000);
  int n = epoll_wait(l->ep, evs, MAX_EVENTS, ms);
  if (n < 0) {
    if (errno != EINTR) return -1;
    n = 0;
  }
  int woken = 0, running;
  for (int i = 0; i < n; i++) {
    int kind = (int)(evs[i].data.u64 >> 32);
    int fd = (int)(uint32_t)evs[i].data.u64;
    uint32_t e = evs[i].events;
    if (kind == TAG_WAKE) {
      uint64_t count; /* one read takes the whole count */
      ssize_t got = read(fd, &count, sizeof count);
      (void)got;
      woken = 1;
    } else if (kind == TAG_CURL) {
      int flags = 0;
      if (e & EPOLLIN) flags |= CURL_CSELECT_IN;
      if (e & EPOLLOUT) flags |= CURL_CSELECT_OUT;
      if (e & (EPOLLERR | EPOLLHUP)) flags |= CURL_CSELECT_ERR;
      curl_multi_socket_action(l->multi, fd, flags, &running);
    } else if ((size_t)fd < l->nios && l->ios[fd]) {
      flyte_io *io = l->ios[fd];
      io->fn(io, e);
    }
  }
  if (l->curl_due >= 0 && now() >= l->curl_due) {
    l->curl_due = -1;
    curl_multi_socket_action(l->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  }
  finish_transfers(l);
  run_timers(l);
  if (woken && l->on_wake) l->on_wake(l->on_wake_ud);
  return 0;
}
