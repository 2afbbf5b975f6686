/* jsonload.h - jansson's parser, with object keys holding \u0000.
 *
 * Plain C (no Lua): the flyte-api's replies and flyte.json both read JSON
 * through it.
 */
#ifndef FLYTE_JSONLOAD_H
#define FLYTE_JSONLOAD_H

#include <jansson.h>

/* The deepest it walks: past jansson's parsing depth (2048), so that any
 * tree jansson builds is walked whole. */
#define FLYTE_JSONLOAD_MAX_DEPTH 4096

/* json_loadb, and object keys holding \u0000 too: jansson's parser refuses
 * them ("NUL byte in object key not supported") though its objects hold
 * them. */
json_t *flyte_json_load(const char *text, size_t len, size_t flags,
                        json_error_t *je);

#endif
