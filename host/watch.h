/* watch.h - watching a set of files for changes, with inotify.
 *
 * Plain C. Watches the directories that hold the files, so that editors
 * that save by writing a new file and renaming it over the old one count
 * as much as those that truncate and write in place.
 */
#ifndef FLYTE_WATCH_H
#define FLYTE_WATCH_H

#include <stddef.h>

typedef struct flyte_watch flyte_watch;

/* NULL with a message when inotify is not available. */
flyte_watch *flyte_watch_new(char *err, size_t errlen);
void flyte_watch_free(flyte_watch *w);

/* Replaces the set of watched files (paths are copied). Returns 0, or -1
 * with a message. */
int flyte_watch_set(flyte_watch *w, char *const *files, size_t n, char *err,
                    size_t errlen);

/* Waits up to `timeout` seconds (< 0: forever) for a change to a watched
 * file, or for flyte_watch_wake. Returns 1 on a change (and sets *which to
 * the changed path, borrowed), 0 on timeout or wake-up. */
int flyte_watch_wait(flyte_watch *w, double timeout, const char **which);

/* Makes a flyte_watch_wait in another thread return (thread-safe). */
void flyte_watch_wake(flyte_watch *w);

#endif
