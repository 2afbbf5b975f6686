/* test.h - a few assertion macros for the plain-C tests (ctest runs each
 * test program; a non-zero exit fails it). */
#ifndef FLYTE_TEST_H
#define FLYTE_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_failures = 0;

#define CHECK(cond)                                                       \
  do {                                                                    \
    if (!(cond)) {                                                        \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__,    \
              #cond);                                                     \
      test_failures++;                                                    \
    }                                                                     \
  } while (0)

#define CHECK_STR(a, b)                                                   \
  do {                                                                    \
    const char *a_ = (a), *b_ = (b);                                      \
    if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0) {                \
      fprintf(stderr, "%s:%d: '%s' != '%s'\n", __FILE__, __LINE__,        \
              a_ ? a_ : "(null)", b_ ? b_ : "(null)");                    \
      test_failures++;                                                    \
    }                                                                     \
  } while (0)

#define TEST_DONE()                                                       \
  do {                                                                    \
    if (test_failures) fprintf(stderr, "%d check(s) failed\n",            \
                               test_failures);                            \
    return test_failures ? 1 : 0;                                         \
  } while (0)

#endif
