/* exec.c - running a program on an event loop, without blocking it.
 *
 * The process ends (for done) once its pidfd says it exited and both
 * output pipes are at end of file, or, when a grandchild keeps a pipe
 * open, once the exit is seen: what is in the pipes then is read, the rest
 * is not waited for.
 */
#define _GNU_SOURCE
#include "exec.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/pidfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

typedef struct {
  flyte_io io;
  int fd;
  char *data;
  size_t len, cap, max;
  int *truncated;
} stream;

struct flyte_proc {
  flyte_loop *loop;
  pid_t pid;
  int reaped;
  flyte_io exit_io;
  int pidfd;
  stream out, err;
  flyte_io in_io;
  int in_fd;
  char *input;
  size_t input_len, input_off;
  flyte_timer timer;
  int finished;
  flyte_exec_result result;
  void (*done)(flyte_proc *, void *);
  void *ud;
};

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void close_fd(flyte_loop *l, flyte_io *io, int *fd) {
  if (*fd < 0) return;
  flyte_io_stop(l, io);
  close(*fd);
  *fd = -1;
}

/* Reads what is there; returns 1 at end of file (or error), else 0. */
static int drain(stream *s) {
  char buf[16384];
  for (;;) {
    ssize_t n = read(s->fd, buf, sizeof buf);
    if (n == 0) return 1;
    if (n < 0) return errno == EAGAIN || errno == EINTR ? 0 : 1;
    size_t keep = (size_t)n;
    if (s->len + keep > s->max) {
      keep = s->max - s->len;
      *s->truncated = 1;
    }
    if (keep == 0) continue;
    if (s->len + keep + 1 > s->cap) {
      size_t cap = s->cap ? s->cap : 4096;
      while (cap < s->len + keep + 1) cap *= 2;
      char *data = realloc(s->data, cap);
      if (data == NULL) { /* keep what we have, drop the rest */
        *s->truncated = 1;
        continue;
      }
      s->data = data;
      s->cap = cap;
    }
    memcpy(s->data + s->len, buf, keep);
    s->len += keep;
    s->data[s->len] = '\0';
  }
}

static void finish(flyte_proc *p) {
  if (p->finished || !p->reaped || p->out.fd >= 0 || p->err.fd >= 0) return;
  p->finished = 1;
  flyte_timer_stop(p->loop, &p->timer);
  close_fd(p->loop, &p->in_io, &p->in_fd);
  p->result.out = p->out.data ? p->out.data : "";
  p->result.out_len = p->out.len;
  p->result.err = p->err.data ? p->err.data : "";
  p->result.err_len = p->err.len;
  if (p->done) p->done(p, p->ud);
}

/* Reaps the child (its pidfd is readable): waitid on that pid only. */
static void reap(flyte_proc *p) {
  siginfo_t si;
  memset(&si, 0, sizeof si);
  while (waitid(P_PID, (id_t)p->pid, &si, WEXITED) != 0 && errno == EINTR) {
  }
  p->reaped = 1;
  if (si.si_code == CLD_EXITED) {
    p->result.status = si.si_status;
  } else {
    p->result.status = -1;
    p->result.signal = si.si_status;
  }
}

static void on_stream(flyte_io *io, uint32_t events);

static void on_exit_io(flyte_io *io, uint32_t events) {
  (void)events;
  flyte_proc *p = io->ud;
  close_fd(p->loop, &p->exit_io, &p->pidfd);
  /* what it left running in its group goes too (its zombie still holds
   * the group's id until it is reaped) */
  kill(-p->pid, SIGKILL);
  reap(p);
  /* what the child wrote is in the pipes: read it, do not wait for a
   * grandchild that holds them open */
  if (p->out.fd >= 0) {
    drain(&p->out);
    close_fd(p->loop, &p->out.io, &p->out.fd);
  }
  if (p->err.fd >= 0) {
    drain(&p->err);
    close_fd(p->loop, &p->err.io, &p->err.fd);
  }
  finish(p);
}

static void on_stream(flyte_io *io, uint32_t events) {
  (void)events;
  flyte_proc *p = io->ud;
  stream *s = io == &p->out.io ? &p->out : &p->err;
  if (drain(s)) close_fd(p->loop, &s->io, &s->fd);
  finish(p);
}

static void on_input(flyte_io *io, uint32_t events) {
  (void)events;
  flyte_proc *p = io->ud;
  while (p->input_off < p->input_len) {
    ssize_t n = write(p->in_fd, p->input + p->input_off,
                      p->input_len - p->input_off);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) return;
      break; /* EPIPE: the program does not read its input */
    }
    p->input_off += (size_t)n;
  }
  close_fd(p->loop, &p->in_io, &p->in_fd);
}

static void kill_group(flyte_proc *p) {
  if (!p->reaped) kill(-p->pid, SIGKILL);
}

static void on_timeout(void *ud) {
  flyte_proc *p = ud;
  p->result.timed_out = 1;
  kill_group(p);
}

static int nonblocking(int fd) {
  int flags = fcntl(fd, F_GETFL);
  return flags < 0 ? -1 : fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

flyte_proc *flyte_exec_start(flyte_loop *loop, const flyte_exec_opts *o,
                             void (*done)(flyte_proc *, void *), void *ud,
                             char *err, size_t errlen) {
  int in[2] = {-1, -1}, out[2] = {-1, -1}, errp[2] = {-1, -1};
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  int fa_ok = 0, attr_ok = 0, rc;
  flyte_proc *p = calloc(1, sizeof *p);
  if (p == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  p->loop = loop;
  p->pidfd = p->in_fd = p->out.fd = p->err.fd = -1;
  p->out.max = p->err.max = o->max_output;
  p->out.truncated = p->err.truncated = &p->result.truncated;
  p->done = done;
  p->ud = ud;
  if (o->input_len) {
    if ((p->input = malloc(o->input_len)) == NULL) {
      snprintf(err, errlen, "out of memory");
      goto fail;
    }
    memcpy(p->input, o->input, o->input_len);
    p->input_len = o->input_len;
  }
  if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0 ||
      pipe2(errp, O_CLOEXEC) != 0) {
    snprintf(err, errlen, "cannot make pipes: %s", strerror(errno));
    goto fail;
  }
  if ((rc = posix_spawn_file_actions_init(&fa)) != 0) goto spawn_failed;
  fa_ok = 1;
  if ((rc = posix_spawnattr_init(&attr)) != 0) goto spawn_failed;
  attr_ok = 1;
  sigset_t none, dflt;
  sigemptyset(&none);
  sigemptyset(&dflt);
  int sigs[] = {SIGPIPE, SIGXFSZ, SIGINT, SIGTERM, SIGHUP,
                SIGUSR1, SIGUSR2, SIGCHLD};
  for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
    sigaddset(&dflt, sigs[i]);
  if ((rc = posix_spawn_file_actions_adddup2(&fa, in[0], 0)) != 0 ||
      (rc = posix_spawn_file_actions_adddup2(&fa, out[1], 1)) != 0 ||
      (rc = posix_spawn_file_actions_adddup2(&fa, errp[1], 2)) != 0 ||
      (rc = posix_spawn_file_actions_addclosefrom_np(&fa, 3)) != 0 ||
      (o->cwd && (rc = posix_spawn_file_actions_addchdir_np(&fa, o->cwd))) ||
      (rc = posix_spawnattr_setflags(
           &attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                      POSIX_SPAWN_SETSIGDEF)) != 0 ||
      (rc = posix_spawnattr_setpgroup(&attr, 0)) != 0 ||
      (rc = posix_spawnattr_setsigmask(&attr, &none)) != 0 ||
      (rc = posix_spawnattr_setsigdefault(&attr, &dflt)) != 0)
    goto spawn_failed;
  rc = posix_spawnp(&p->pid, o->argv[0], &fa, &attr, (char *const *)o->argv,
                    o->env ? (char *const *)o->env : environ);
  if (rc != 0) goto spawn_failed;
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  fa_ok = attr_ok = 0;
  close(in[0]);
  close(out[1]);
  close(errp[1]);
  in[0] = out[1] = errp[1] = -1;
  p->in_fd = in[1];
  p->out.fd = out[0];
  p->err.fd = errp[0];
  p->pidfd = pidfd_open(p->pid, 0);
  if (p->pidfd < 0 || nonblocking(p->in_fd) || nonblocking(p->out.fd) ||
      nonblocking(p->err.fd) ||
      flyte_io_start(loop, &p->exit_io, p->pidfd, EPOLLIN, on_exit_io, p) ||
      flyte_io_start(loop, &p->out.io, p->out.fd, EPOLLIN, on_stream, p) ||
      flyte_io_start(loop, &p->err.io, p->err.fd, EPOLLIN, on_stream, p)) {
    snprintf(err, errlen, "cannot watch the process: %s", strerror(errno));
    flyte_exec_release(p);
    return NULL;
  }
  if (p->input_len) {
    if (flyte_io_start(loop, &p->in_io, p->in_fd, EPOLLOUT, on_input, p)) {
      snprintf(err, errlen, "cannot watch the process: %s", strerror(errno));
      flyte_exec_release(p);
      return NULL;
    }
  } else {
    close(p->in_fd); /* no input: end of file at once */
    p->in_fd = -1;
  }
  if (o->timeout > 0)
    flyte_timer_start(loop, &p->timer, now() + o->timeout, on_timeout, p);
  return p;

spawn_failed:
  snprintf(err, errlen, "cannot run '%s': %s", o->argv[0], strerror(rc));
fail:
  if (fa_ok) posix_spawn_file_actions_destroy(&fa);
  if (attr_ok) posix_spawnattr_destroy(&attr);
  for (int i = 0; i < 2; i++) {
    if (in[i] >= 0) close(in[i]);
    if (out[i] >= 0) close(out[i]);
    if (errp[i] >= 0) close(errp[i]);
  }
  free(p->input);
  free(p);
  return NULL;
}

const flyte_exec_result *flyte_exec_result_of(const flyte_proc *p) {
  return &p->result;
}

void flyte_exec_release(flyte_proc *p) {
  if (p == NULL) return;
  flyte_timer_stop(p->loop, &p->timer);
  close_fd(p->loop, &p->in_io, &p->in_fd);
  close_fd(p->loop, &p->out.io, &p->out.fd);
  close_fd(p->loop, &p->err.io, &p->err.fd);
  close_fd(p->loop, &p->exit_io, &p->pidfd);
  if (p->pid > 0 && !p->reaped) {
    /* SIGKILL cannot be caught: the wait is short */
    kill_group(p);
    while (waitpid(p->pid, NULL, 0) < 0 && errno == EINTR) {
    }
  }
  free(p->out.data);
  free(p->err.data);
  free(p->input);
  free(p);
}
