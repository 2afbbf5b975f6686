/* config.h - the host's settings, from the environment and flags.
 *
 * Plain C. Every setting is an environment variable and a flag; the flag
 * wins. A bad value is reported in one line naming the setting.
 */
#ifndef FLYTE_CONFIG_H
#define FLYTE_CONFIG_H

#include <stddef.h>

typedef struct {
  char *key, *value;
} flyte_label;

typedef struct {
  char *api;              /* FLYTE_API: the API root URL, NULL when unset */
  flyte_label *labels;    /* FLYTE_LABELS, parsed, in the order given */
  size_t nlabels;
  double api_timeout;     /* FLYTE_API_TIMEOUT: seconds per request */
  char *jwt;              /* FLYTE_JWT: never printed */
  int insecure;           /* FLYTE_INSECURE */
  double poll_interval;   /* FLYTE_POLL_INTERVAL: seconds, >= 0.5 */
  int poll_interval_set;  /* given by the user (dev mode picks its own) */
  int workers;            /* FLYTE_WORKERS: threads; default one per CPU */
  int concurrency;        /* FLYTE_CONCURRENCY: actions held at once */
  int health_port;        /* FLYTE_HEALTH_PORT: 0 turns it off; -1: any
                           * free port (dev's default) */
  int health_port_set;    /* given by the user */
  int reload;             /* FLYTE_RELOAD */
  int log_level;          /* FLYTE_LOG_LEVEL (flyte_log_level) */
  int log_format;         /* FLYTE_LOG_FORMAT (flyte_log_format) */
  double handler_timeout; /* FLYTE_HANDLER_TIMEOUT: seconds, 0 for none */
  size_t memory_limit;    /* FLYTE_MEMORY_LIMIT: bytes per Lua state, 0 none */
  double shutdown_grace;  /* FLYTE_SHUTDOWN_GRACE: seconds */
  char *outbox;           /* FLYTE_OUTBOX: a directory, NULL when off */
  int outbox_set;         /* given by the user */
  int outbox_sync;        /* FLYTE_OUTBOX_SYNC: 1 always (default), 0 off */
  /* `dev` only */
  int dev_port;           /* --port: the stand-in API's port */
  int dev_port_set;       /* given by the user */
  char *dev_send;         /* --send 'COMMAND [INPUT_JSON]' */
  /* what is left on the command line, in order; borrowed from argv */
  char **args;
  int nargs;
} flyte_config;

/* Fills `c` from the environment, then from argv[0..argc) (the words after
 * the subcommand). Returns 0, or -1 with a one-line message in err. */
int flyte_config_load(flyte_config *c, int argc, char **argv, char *err,
                      size_t errlen);
void flyte_config_free(flyte_config *c);

/* Parses "k=v,k=v" (spaces trimmed) into labels; caller frees with
 * flyte_labels_free. Returns 0 or -1 with a message. */
int flyte_labels_parse(const char *text, flyte_label **out, size_t *n,
                       char *err, size_t errlen);
void flyte_labels_free(flyte_label *labels, size_t n);

/* Parses a size in bytes ("64MB", "512k", "1G", "1048576"); 0 or -1. */
int flyte_parse_size(const char *text, size_t *out);

/* Parses seconds ("5", "0.5", "1.5s"); returns 0 or -1. */
int flyte_parse_seconds(const char *text, double *out);

#endif
