/* test_api.c - finding links by rel suffix, and parsing each response. */
#include "../api.h"

#include "test.h"

#define S(lit) lit, sizeof lit - 1

static void test_find_link(void) {
  json_t *links = json_loads(
      "[{\"href\":\"http://h/v1\",\"rel\":\"self\"},"
      "{\"href\":\"http://h/v1/packs\","
      "\"rel\":\"http://h/swagger#!/pack/listPacks\"},"
      "{\"rel\":\"http://h/swagger#!/info/health\"},"
      "{\"href\":\"http://h/health\",\"rel\":\"http://h/swagger#!/info/health\"}]",
      0, NULL);
  CHECK(links != NULL);
  CHECK_STR(flyte_api_find_link(links, "pack/listPacks"), "http://h/v1/packs");
  /* a link without href is skipped, the next match is used */
  CHECK_STR(flyte_api_find_link(links, "info/health"), "http://h/health");
  CHECK(flyte_api_find_link(links, "takeAction") == NULL);
  CHECK(flyte_api_find_link(NULL, "self") == NULL);
  json_decref(links);
}

static void test_discovery(void) {
  flyte_api_root root;
  char err[256];
  CHECK(flyte_api_parse_discovery(
            "http://h/v1",
            S("{\"links\":[{\"href\":\"http://h/v1/packs\","
              "\"rel\":\"http://h/swagger#!/pack/listPacks\"}]}"),
            &root, err, sizeof err) == 0);
  CHECK_STR(root.packs_url, "http://h/v1/packs");
  CHECK(root.health_url == NULL);
  flyte_api_root_free(&root);

  CHECK(flyte_api_parse_discovery("http://h/v1", S("{\"links\":[]}"), &root,
                                  err, sizeof err) == -1);
  CHECK_STR(err, "discovery: http://h/v1 has no link with a rel ending in "
                 "pack/listPacks");
  CHECK(root.packs_url == NULL);
  CHECK(flyte_api_parse_discovery("http://h/v1", S("[]"), &root, err,
                                  sizeof err) == -1);
  CHECK_STR(err, "discovery: response is not a JSON object (another JSON "
                 "value): '[]'");
}

static void test_registration(void) {
  flyte_api_pack pack;
  char err[256];
  CHECK(flyte_api_parse_registration(
            S("{\"id\":\"P.env.dev\",\"links\":["
              "{\"href\":\"http://h/t\",\"rel\":\"x#!/action/takeAction\"},"
              "{\"href\":\"http://h/e\",\"rel\":\"x#!/event/event\"}]}"),
            &pack, err, sizeof err) == 0);
  CHECK_STR(pack.id, "P.env.dev");
  CHECK_STR(pack.take_url, "http://h/t");
  CHECK_STR(pack.event_url, "http://h/e");
  flyte_api_pack_free(&pack);

  CHECK(flyte_api_parse_registration(
            S("{\"links\":[{\"href\":\"http://h/t\",\"rel\":\"takeAction\"}]}"),
            &pack, err, sizeof err) == -1);
  CHECK_STR(err, "registration: the response has no link with a rel ending "
                 "in event");
  CHECK(pack.id == NULL && pack.take_url == NULL);
}

static void test_take(void) {
  flyte_action a;
  char err[256];
  CHECK(flyte_api_parse_take(
            200,
            S("{\"command\":\"go\",\"input\":{\"n\":1},\"links\":["
              "{\"href\":\"http://h/v1/packs/P/actions/a1/result\","
              "\"rel\":\"http://h/swagger#/actionResult\"}]}"),
            &a, err, sizeof err) == FLYTE_TAKE_ACTION);
  CHECK_STR(a.command, "go");
  CHECK_STR(a.id, "a1");
  CHECK_STR(a.result_url, "http://h/v1/packs/P/actions/a1/result");
  CHECK(json_integer_value(json_object_get(a.input, "n")) == 1);
  CHECK(a.input_error == NULL);
  flyte_action_free(&a);

  /* an integer beyond 64 bits: the action is read, its input is not */
  CHECK(flyte_api_parse_take(
            200,
            S("{\"command\":\"go\",\"input\":123456789012345678901234,"
              "\"links\":[{\"href\":\"h/a2/result\","
              "\"rel\":\"actionResult\"}]}"),
            &a, err, sizeof err) == FLYTE_TAKE_ACTION);
  CHECK_STR(a.id, "a2");
  CHECK(a.input == NULL && a.input_error != NULL);
  flyte_action_free(&a);

  CHECK(flyte_api_parse_take(200, S("{\"command\":\"go\"}"), &a, err,
                             sizeof err) == FLYTE_TAKE_ERROR);
  CHECK_STR(err, "take: the action has no link with a rel ending in "
                 "actionResult (it cannot be completed)");
  CHECK(flyte_api_parse_take(204, S(""), &a, err, sizeof err) ==
        FLYTE_TAKE_NONE);
  CHECK(flyte_api_parse_take(404, S("no such pack"), &a, err, sizeof err) ==
        FLYTE_TAKE_UNKNOWN_PACK);
  CHECK_STR(err, "take: HTTP 404: no such pack");
  CHECK(flyte_api_parse_take(401, S(""), &a, err, sizeof err) ==
        FLYTE_TAKE_DENIED);
  CHECK_STR(err, "take: HTTP 401");
  CHECK(flyte_api_parse_take(500, S("a\nb"), &a, err, sizeof err) ==
        FLYTE_TAKE_ERROR);
  CHECK_STR(err, "take: HTTP 500: a b");
  CHECK(a.command == NULL && a.input_error == NULL);
}

/* A 200 whose body jansson cannot read still names its result link: the
 * action is completed with a FATAL instead of being left PENDING. */
static void test_take_unreadable(void) {
  flyte_action a;
  char err[256] = "";
  static const char body[] =
      "{\"command\":\"createIssue\",\"input\":{\"a\\u0000b\":1},"
      "\"links\":[{\"href\":\"http:\\/\\/h/v1/packs/p/actions/7/result\","
      "\"rel\":\"http://h/swagger#/actionResult\"}]}";
  CHECK(flyte_api_parse_take(200, body, sizeof body - 1, &a, err, sizeof err) ==
        FLYTE_TAKE_ACTION);
  CHECK_STR(a.result_url, "http://h/v1/packs/p/actions/7/result");
  CHECK_STR(a.id, "7");
  CHECK_STR(a.command, "createIssue");
  CHECK(a.input == NULL);
  CHECK(a.input_error != NULL &&
        strstr(a.input_error, "the action's body is not JSON that can be "
                              "read") != NULL);
  flyte_action_free(&a);

  /* nothing to complete: an error that says an action may be stranded */
  CHECK(flyte_api_parse_take(200, "{not json", 9, &a, err, sizeof err) ==
        FLYTE_TAKE_ERROR);
  CHECK(strstr(err, "may have handed out an action") != NULL);
}

int main(void) {
  test_find_link();
  test_discovery();
  test_registration();
  test_take();
  test_take_unreadable();
  TEST_DONE();
}
