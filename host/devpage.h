/* devpage.h - the dev page (host/devpage.html), built into the binary.
 *
 * The build turns the file into a byte array (cmake/embed.cmake); the
 * stand-in serves it at GET /.
 */
#ifndef FLYTE_DEVPAGE_H
#define FLYTE_DEVPAGE_H

#include <stddef.h>

/* The page's bytes (UTF-8 HTML), followed by a NUL not counted in len. */
extern const unsigned char flyte_devpage[];
extern const size_t flyte_devpage_len;

#endif
