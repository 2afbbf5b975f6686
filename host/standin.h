/* standin.h - a stand-in flyte-api, embedded in the binary.
 *
 * Plain C on libmicrohttpd and jansson. It follows flyte-api.md to the
 * letter (absolute links built from the Host header, rels that are
 * documentation URLs, the same status codes), keeps everything in memory,
 * and adds a few /dev/ endpoints to enqueue actions, read what arrived and
 * inject faults into chosen API requests, and a web page at / that shows
 * them (host/devpage.html).
 * Used by `flyte-host dev`, `flyte-host standin` and the end-to-end specs.
 */
#ifndef FLYTE_STANDIN_H
#define FLYTE_STANDIN_H

typedef struct flyte_standin flyte_standin;

/* What happened, for `flyte-host dev` to log: kind is "registration",
 * "action", "take", "result" or "event"; json is the body involved. */
typedef void (*flyte_standin_notify)(void *ud, const char *kind,
                                     const char *pack_id, const char *json);

typedef struct {
  const char *bind;       /* address to listen on; "127.0.0.1" when NULL */
  int port;               /* 0: any free port */
  const char *jwt;        /* when set, every API request must carry it */
  flyte_standin_notify notify; /* may be NULL */
  void *notify_ud;
} flyte_standin_opts;

/* Starts serving on its own threads. Returns NULL with a message in err. */
flyte_standin *flyte_standin_start(const flyte_standin_opts *opts, char *err,
                                   unsigned long errlen);
/* The port it listens on (the real one when opts->port was 0). */
int flyte_standin_port(const flyte_standin *s);
/* Queues an action for a pack, as a flow would. pack_id NULL: the pack
 * registered last. input_json NULL: no input. Returns the action id (> 0),
 * or -1 with a message. */
long flyte_standin_enqueue(flyte_standin *s, const char *pack_id,
                           const char *command, const char *input_json,
                           char *err, unsigned long errlen);
/* What the host in the same process says of its code, for the dev page
 * (GET /dev/watch shows it as "host"): whether the last reload worked, its
 * error and time, and when the code that serves was loaded. Any thread. */
void flyte_standin_set_code(flyte_standin *s, int ok, const char *error,
                            const char *at, const char *serving);
void flyte_standin_stop(flyte_standin *s);

#endif
