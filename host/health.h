/* health.h - the pack's health server on libmicrohttpd.
 *
 * Plain C. Any GET path answers with the JSON the callback makes and the
 * status it sets (200 when every check is healthy, 500 otherwise).
 */
#ifndef FLYTE_HEALTH_H
#define FLYTE_HEALTH_H

typedef struct flyte_health flyte_health;

/* Returns a body (the server frees it) and sets *status; *content_type is
 * application/json unless the callback sets it. */
typedef char *(*flyte_health_fn)(void *ud, const char *path, int *status,
                                 const char **content_type);

/* Listens on all addresses at `port` (0: a free one). NULL with a message
 * on failure. */
flyte_health *flyte_health_start(int port, flyte_health_fn fn, void *ud,
                                 char *err, unsigned long errlen);

/* The port it listens on. */
int flyte_health_port(const flyte_health *h);
void flyte_health_stop(flyte_health *h);

#endif
