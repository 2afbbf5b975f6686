/* exec.h - running a program on an event loop, without blocking it.
 *
 * Plain C. posix_spawn with no shell, the child in a process group of its
 * own with every descriptor of the host closed and default signals; its
 * stdin written and its stdout and stderr read through non-blocking pipes
 * watched by the loop; its end seen through a pidfd and reaped by pid, so
 * no other thread's children are touched and no zombie stays. When it
 * exits, at the timeout, or when released early, the whole group gets
 * SIGKILL: nothing it started in its group outlives it.
 */
#ifndef FLYTE_EXEC_H
#define FLYTE_EXEC_H

#include <stddef.h>

#include "loop.h"

typedef struct flyte_proc flyte_proc;

typedef struct {
  const char *const *argv;  /* argv[0] found on PATH; NULL-ended */
  const char *const *env;   /* "NAME=value", NULL-ended; NULL: the host's */
  const char *cwd;          /* NULL: the host's */
  const char *input;        /* written to stdin, then closed; may be NULL */
  size_t input_len;
  size_t max_output;        /* per stream; more is read and dropped */
  double timeout;           /* seconds; 0 for none */
} flyte_exec_opts;

typedef struct {
  int status;    /* exit status, or -1 when killed by a signal */
  int signal;    /* the signal that killed it, or 0 */
  int timed_out; /* killed at the timeout */
  int truncated; /* some output was dropped (over max_output) */
  char *out, *err; /* NUL-terminated; owned by the process */
  size_t out_len, err_len;
} flyte_exec_result;

/* Starts the program; `done` runs on the loop once it has exited and its
 * output is read. NULL with a message when it cannot start (not found,
 * not executable, out of descriptors). Everything in opts is copied. */
flyte_proc *flyte_exec_start(flyte_loop *loop, const flyte_exec_opts *opts,
                             void (*done)(flyte_proc *p, void *ud), void *ud,
                             char *err, size_t errlen);
/* The outcome, once done has run; borrowed until release. */
const flyte_exec_result *flyte_exec_result_of(const flyte_proc *p);
/* Frees a finished process, or kills a running one (SIGKILL to its group)
 * and reaps it first: done will not run. */
void flyte_exec_release(flyte_proc *p);

#endif
