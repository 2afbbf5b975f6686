/* test_config.c - settings from the environment and flags. */
#include "../config.h"

#include <stdlib.h>
#include <unistd.h>

#include "test.h"

static int load(flyte_config *c, int argc, char **argv, char *err) {
  return flyte_config_load(c, argc, argv, err, 256);
}

int main(void) {
  flyte_config c;
  char err[256];

  unsetenv("FLYTE_API");
  unsetenv("FLYTE_LABELS");
  unsetenv("FLYTE_WORKERS");
  unsetenv("FLYTE_CONCURRENCY");

  /* defaults */
  CHECK(load(&c, 0, NULL, err) == 0);
  CHECK(c.api == NULL);
  CHECK(c.workers == (int)sysconf(_SC_NPROCESSORS_ONLN)); /* one per CPU */
  CHECK(c.concurrency == 256);
  CHECK(c.health_port == 8090);
  CHECK(c.poll_interval == 5);
  CHECK(c.api_timeout == 10);
  CHECK(c.reload == 1);
  flyte_config_free(&c);

  /* the flag wins over the environment */
  setenv("FLYTE_WORKERS", "2", 1);
  setenv("FLYTE_API", "http://flyte:8080/", 1);
  char *argv1[] = {"--workers", "8", "pack.lua", "--no-reload",
                   "--poll-interval=0.5"};
  CHECK(load(&c, 5, argv1, err) == 0);
  CHECK(c.workers == 8);
  CHECK_STR(c.api, "http://flyte:8080");
  CHECK(c.nargs == 1);
  CHECK_STR(c.args[0], "pack.lua");
  CHECK(c.reload == 0);
  CHECK(c.poll_interval == 0.5);
  flyte_config_free(&c);

  /* bad values name the setting */
  setenv("FLYTE_CONCURRENCY", "0", 1);
  CHECK(load(&c, 0, NULL, err) == -1);
  CHECK_STR(err,
            "FLYTE_CONCURRENCY: '0' is not a whole number from 1 to 100000");
  flyte_config_free(&c);
  unsetenv("FLYTE_CONCURRENCY");
  char *argv_c[] = {"--concurrency", "32"};
  CHECK(load(&c, 2, argv_c, err) == 0);
  CHECK(c.concurrency == 32);
  flyte_config_free(&c);

  setenv("FLYTE_WORKERS", "many", 1);
  CHECK(load(&c, 0, NULL, err) == -1);
  CHECK_STR(err, "FLYTE_WORKERS: 'many' is not a whole number from 1 to 1024");
  flyte_config_free(&c);
  unsetenv("FLYTE_WORKERS");

  char *argv2[] = {"--poll-interval", "0.1"};
  CHECK(load(&c, 2, argv2, err) == -1);
  CHECK_STR(err, "--poll-interval: 0.1 s is below the minimum of 0.5 s");
  flyte_config_free(&c);

  char *argv3[] = {"--bogus"};
  CHECK(load(&c, 1, argv3, err) == -1);
  CHECK_STR(err, "unknown option '--bogus' (see flyte-host --help)");
  flyte_config_free(&c);

  setenv("FLYTE_API", "flyte:8080", 1);
  CHECK(load(&c, 0, NULL, err) == -1);
  CHECK_STR(err, "FLYTE_API: 'flyte:8080' is not an http:// or https:// URL");
  flyte_config_free(&c);
  unsetenv("FLYTE_API");

  /* the outbox's sync: always unless told off */
  unsetenv("FLYTE_OUTBOX_SYNC");
  CHECK(load(&c, 0, NULL, err) == 0);
  CHECK(c.outbox_sync == 1);
  flyte_config_free(&c);
  setenv("FLYTE_OUTBOX_SYNC", "off", 1);
  CHECK(load(&c, 0, NULL, err) == 0);
  CHECK(c.outbox_sync == 0);
  flyte_config_free(&c);
  char *argv_s[] = {"--outbox-sync", "always"};
  CHECK(load(&c, 2, argv_s, err) == 0);
  CHECK(c.outbox_sync == 1);
  flyte_config_free(&c);
  setenv("FLYTE_OUTBOX_SYNC", "sometimes", 1);
  CHECK(load(&c, 0, NULL, err) == -1);
  CHECK_STR(err, "FLYTE_OUTBOX_SYNC: 'sometimes' is not always or off");
  flyte_config_free(&c);
  unsetenv("FLYTE_OUTBOX_SYNC");

  /* labels: spaces trimmed, order kept, errors clear */
  flyte_label *labels;
  size_t n;
  CHECK(flyte_labels_parse(" env = dev , team=ops,", &labels, &n, err, 256) ==
        0);
  CHECK(n == 2);
  CHECK_STR(labels[0].key, "env");
  CHECK_STR(labels[0].value, "dev");
  CHECK_STR(labels[1].key, "team");
  CHECK_STR(labels[1].value, "ops");
  flyte_labels_free(labels, n);
  CHECK(flyte_labels_parse("env", &labels, &n, err, 256) == -1);
  CHECK_STR(err, "label 'env' has no '=' (want key=value,key=value)");
  CHECK(flyte_labels_parse("=x", &labels, &n, err, 256) == -1);
  CHECK_STR(err, "label '=x' has an empty key");

  double s;
  CHECK(flyte_parse_seconds("1.5s", &s) == 0 && s == 1.5);
  CHECK(flyte_parse_seconds("-1", &s) == -1);
  CHECK(flyte_parse_seconds("abc", &s) == -1);
  TEST_DONE();
}
