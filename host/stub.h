/* stub.h - a scripted HTTP server for specs of packs that call services
 * (`flyte-host stub`, flyte.testing's http_stub). See stub.c.
 */
#ifndef FLYTE_STUB_H
#define FLYTE_STUB_H

#include <stddef.h>

typedef struct flyte_stub flyte_stub;

/* Serves on 127.0.0.1:port (0: a free one) on its own threads, answering
 * routes_json ("METHOD /path" -> { status, headers, body, delay }; NULL:
 * none). NULL with a message on failure. */
flyte_stub *flyte_stub_start(int port, const char *routes_json, char *err,
                             size_t errlen);
int flyte_stub_port(const flyte_stub *s);
void flyte_stub_stop(flyte_stub *s);

#endif
