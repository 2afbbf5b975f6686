/* fuzz_api.c - libFuzzer target for the flyte-api response parsers (api.c).
 *
 * The same bytes go to each parser as a response body: discovery,
 * registration, and take with a 200 and with an error status. A parser
 * never crashes or leaks, and it either fills every field it promises or
 * fails with a message and leaves its output zeroed.
 */
#include "../api.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void check(int ok, const char *what, const char *err) {
  if (ok) return;
  fprintf(stderr, "fuzz_api: %s (err: '%s')\n", what, err);
  abort();
}

static int is_zero(const void *p, size_t n) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++)
    if (b[i]) return 0;
  return 1;
}

static void discovery(const char *body, size_t len) {
  flyte_api_root root;
  char err[512] = "";
  if (flyte_api_parse_discovery("http://h/v1", body, len, &root, err,
                                sizeof err) == 0) {
    check(root.packs_url != NULL, "discovery without packs_url", err);
  } else {
    check(err[0] != '\0', "discovery failed without a message", err);
    check(is_zero(&root, sizeof root), "discovery failed, output set", err);
  }
  flyte_api_root_free(&root);
}

static void registration(const char *body, size_t len) {
  flyte_api_pack pack;
  char err[512] = "";
  if (flyte_api_parse_registration(body, len, &pack, err, sizeof err) == 0) {
    check(pack.id && pack.take_url && pack.event_url,
          "registration with a field missing", err);
  } else {
    check(err[0] != '\0', "registration failed without a message", err);
    check(is_zero(&pack, sizeof pack), "registration failed, output set",
          err);
  }
  flyte_api_pack_free(&pack);
}

static void take(long status, const char *body, size_t len) {
  flyte_action a;
  char err[512] = "";
  flyte_take_result rc =
      flyte_api_parse_take(status, body, len, &a, err, sizeof err);
  if (rc == FLYTE_TAKE_ACTION) {
    check(a.command && a.result_url && a.id, "action with a field missing",
          err);
    check(!(a.input && a.input_error), "action with input and input_error",
          err);
    flyte_action_free(&a);
  } else {
    check(rc != FLYTE_TAKE_NONE || status == 204, "NONE without a 204", err);
    check(rc == FLYTE_TAKE_NONE || err[0] != '\0',
          "take failed without a message", err);
    check(is_zero(&a, sizeof a), "take failed, output set", err);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* A response body is NUL-ended (http.h): copy into a buffer one byte
   * longer, so ASan still catches a read past that NUL. */
  char *body = malloc(size + 1);
  if (body == NULL) return 0;
  memcpy(body, data, size);
  body[size] = '\0';
  discovery(body, size);
  registration(body, size);
  take(200, body, size);
  take(size % 2 ? 500 : 404, body, size);
  free(body);
  return 0;
}
