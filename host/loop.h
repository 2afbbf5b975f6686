/* loop.h - an event loop per thread: timers, descriptors, libcurl transfers.
 *
 * Plain C. epoll watches the descriptors of libcurl's multi handle (its
 * socket interface, as curl's docs/examples/ephiperfifo.c) and those of the
 * loop's own users (a child's pipes); a binary heap keeps the timers; an
 * eventfd lets other threads wake the loop. Callbacks run from
 * flyte_loop_run_once, never from inside libcurl.
 */
#ifndef FLYTE_LOOP_H
#define FLYTE_LOOP_H

#include <curl/curl.h>
#include <stddef.h>
#include <stdint.h>

typedef struct flyte_loop flyte_loop;

typedef void (*flyte_loop_fn)(void *ud);

/* A timer: a struct the user owns, armed at most once at a time. */
typedef struct flyte_timer {
  double due;  /* monotonic seconds */
  size_t slot; /* its place in the heap + 1; 0 when not armed */
  flyte_loop_fn fn;
  void *ud;
} flyte_timer;

/* A descriptor watched for reading or writing (EPOLLIN, EPOLLOUT). */
typedef struct flyte_io {
  int fd;
  uint32_t events;
  void (*fn)(struct flyte_io *io, uint32_t events);
  void *ud;
} flyte_io;

/* A libcurl transfer on the loop's multi handle: set CURLOPT_PRIVATE of
 * the easy handle to a flyte_transfer; `done` runs once it has ended. */
typedef struct flyte_transfer {
  void (*done)(struct flyte_transfer *t, CURLcode result);
} flyte_transfer;

/* NULL with a message when the kernel refuses (out of descriptors). */
flyte_loop *flyte_loop_new(char *err, size_t errlen);
/* Stops nothing: the users stop their timers, descriptors and transfers
 * first. */
void flyte_loop_free(flyte_loop *l);

void flyte_timer_start(flyte_loop *l, flyte_timer *t, double due,
                       flyte_loop_fn fn, void *ud);
void flyte_timer_stop(flyte_loop *l, flyte_timer *t);
/* Seconds until the first timer is due (0 when due), or -1 when none. */
double flyte_loop_next_timer(const flyte_loop *l);

/* Watches io->fd; returns 0, or -1 (errno) when epoll refuses. */
int flyte_io_start(flyte_loop *l, flyte_io *io, int fd, uint32_t events,
                   void (*fn)(flyte_io *, uint32_t), void *ud);
int flyte_io_modify(flyte_loop *l, flyte_io *io, uint32_t events);
void flyte_io_stop(flyte_loop *l, flyte_io *io);

/* The loop's multi handle; its connection cache serves every transfer. */
CURLM *flyte_loop_multi(flyte_loop *l);
/* The most connections the loop keeps open, in use or idle for reuse:
 * at least as many as its transfers at once, or libcurl closes each
 * connection as its transfer ends. libcurl's default, 4 per transfer
 * running at the moment, closed those of a burst once it was over (with
 * the outbox on, the results one sync makes durable are posted together,
 * between syncs only a take runs: 2,225 connections opened in a
 * 20,000-action echo burst, 8 with the outbox off). */
void flyte_loop_set_connections(flyte_loop *l, long most);
/* Adds an easy handle whose CURLOPT_PRIVATE is a flyte_transfer; returns
 * 0, or -1 when libcurl refuses. */
int flyte_loop_add(flyte_loop *l, CURL *easy);
/* Takes a transfer off the loop (cancelled: its done does not run). */
void flyte_loop_remove(flyte_loop *l, CURL *easy);

/* Wakes the loop from any thread; the wake function (if set) then runs on
 * the loop's thread. Async-signal-safe. */
void flyte_loop_wake(flyte_loop *l);
void flyte_loop_on_wake(flyte_loop *l, flyte_loop_fn fn, void *ud);

/* Waits for something to happen for at most `timeout` seconds (-1: until
 * something does; 0: not at all) and runs its callbacks: descriptors,
 * finished transfers, due timers, the wake function. Returns 0, or -1
 * when epoll failed. */
int flyte_loop_run_once(flyte_loop *l, double timeout);

/* The largest delay, in seconds, between a timer falling due and its
 * callback running, since the last call (then reset): loop lag. */
double flyte_loop_take_lag(flyte_loop *l);

#endif
