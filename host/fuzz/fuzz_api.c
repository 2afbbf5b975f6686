/* fuzz_api.c - libFuzzer target for the flyte-api response parsers (api.c).
 *
 * The same bytes go to each parser as a response body: discovery,
 * registration, and take with a 200 and with an error status. A parser
 * never crashes or leaks, and it either fills every field it promises or
 * fails with a message and leaves its output zeroed. When jansson reads the
 * whole body as an object, the take's reading of it agrees: the result link
 * is the one in the top-level links (never one found elsewhere), and the
 * command and input are the top-level ones. The bytes also go, as a URL, to
 * the check of where the token may go.
 */
#include "../api.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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

/* What jansson makes of the whole body, when it reads it as an object with
 * no key twice: the take's reading must agree with it. */
static void agree(const char *body, size_t len, flyte_take_result rc,
                  const flyte_action *a, const char *err) {
  json_t *j = json_loadb(body, len, JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES,
                         NULL);
  if (!json_is_object(j)) {
    json_decref(j);
    return;
  }
  const char *want = flyte_api_find_link(json_object_get(j, "links"),
                                         "actionResult");
  check((rc == FLYTE_TAKE_ACTION) == (want != NULL),
        "take and jansson disagree on whether there is a result link", err);
  if (rc == FLYTE_TAKE_ACTION && want != NULL) {
    check(strcmp(a->result_url, want) == 0,
          "the result link is not the top-level one", err);
    const char *command = json_string_value(json_object_get(j, "command"));
    check(strcmp(a->command, command ? command : "") == 0,
          "the command is not the top-level one", err);
    json_t *input = json_object_get(j, "input");
    check(a->input_error == NULL, "an input jansson reads is an error", err);
    check(input ? a->input && json_equal(a->input, input) : !a->input,
          "the input is not the top-level one", err);
  }
  json_decref(j);
}

/* The same body read as it streams, in chunks of 7 bytes, as a reply too
 * large to keep is: when the whole-body reading finds an action (and the
 * body's keys are plain), the streamed one finds the same link and
 * command, and says the input was not read. */
static void streamed(const char *body, size_t len, flyte_take_result rc,
                     const flyte_action *whole) {
  flyte_take_scan *t = flyte_take_scan_new();
  flyte_action a;
  char err[512] = "";
  for (size_t off = 0; off < len; off += 7)
    flyte_take_scan_feed(t, body + off, len - off < 7 ? len - off : 7);
  flyte_take_result src =
      flyte_take_scan_finish(t, 200, len, 1, &a, err, sizeof err);
  if (src == FLYTE_TAKE_ACTION) {
    check(a.result_url && a.id && a.command && a.input == NULL &&
              a.input_error != NULL,
          "streamed take: a field missing", err);
  } else {
    check(err[0] != '\0', "streamed take failed without a message", err);
    check(is_zero(&a, sizeof a), "streamed take failed, output set", err);
  }
  /* a key spelled with escapes (or NULs) is one the stream does not know */
  if (rc == FLYTE_TAKE_ACTION && !memchr(body, '\\', len) &&
      !memchr(body, '\0', len) && strlen(whole->command) < 1000) {
    check(src == FLYTE_TAKE_ACTION, "streamed take lost the action", err);
    if (src == FLYTE_TAKE_ACTION) {
      check(strcmp(a.result_url, whole->result_url) == 0,
            "streamed take: another result link", err);
      check(strcmp(a.command, whole->command) == 0,
            "streamed take: another command", err);
    }
  }
  flyte_action_free(&a);
  flyte_take_scan_free(t);
}

static void take(long status, const char *body, size_t len) {
  flyte_action a;
  char err[512] = "";
  flyte_take_result rc =
      flyte_api_parse_take(status, body, len, &a, err, sizeof err);
  if (status == 200) agree(body, len, rc, &a, err);
  if (status == 200) streamed(body, len, rc, &a);
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

/* The body as a URL: allowed only when its origin is the one allowed. */
static void url(const char *body) {
  char err[1024] = "";
  int rc = flyte_api_url_allowed(body, err, sizeof err);
  check(rc == 0 || (rc == -1 && strstr(err, "refused to send the token to ") ==
                                    err),
        "url_allowed gave neither 0 nor -1 with a message", err);
  if (rc == 0)
    check(strncasecmp(body, "http", 4) == 0, "a URL that is not http allowed",
          body);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  flyte_api_allow_url("http://h:8080/v1");
  return 0;
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
  url(body);
  free(body);
  return 0;
}
