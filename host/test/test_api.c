/* test_api.c - finding links by rel suffix, parsing each response, and
 * where the token may go. */
#include "../api.h"
#include "../log.h"
#include "../standin.h"

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

/* A 200 whose input jansson cannot read is still a reply with a result
 * link: the action is completed with a FATAL instead of being left
 * PENDING. */
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
  /* a key holding \u0000 is read (jansson's parser alone refuses it) */
  CHECK(a.input_error == NULL);
  CHECK(json_integer_value(json_object_getn(a.input, "a\0b", 3)) == 1);
  flyte_action_free(&a);

  /* nothing to complete: an error that says an action may be stranded */
  CHECK(flyte_api_parse_take(200, "{not json", 9, &a, err, sizeof err) ==
        FLYTE_TAKE_ERROR);
  CHECK(strstr(err, "may have handed out an action") != NULL);
  CHECK(a.command == NULL && a.result_url == NULL);
}

/* Parses body as the reply to a take with status 200; *a is filled (the
 * caller frees it) only for FLYTE_TAKE_ACTION. */
static flyte_take_result take(const char *body, flyte_action *a, char *err,
                              size_t errlen) {
  return flyte_api_parse_take(200, body, strlen(body), a, err, errlen);
}

#define REAL_LINKS                                                       \
  "[{\"href\":\"http://h/v1/packs/P/actions/9/result\","               \
  "\"rel\":\"http://h/swagger#/actionResult\"}]"
#define REAL_URL "http://h/v1/packs/P/actions/9/result"
#define EVIL_URL "http://127.0.0.1:18555/steal/actions/zzz/result"

/* Issue 14: an input the host cannot decode, holding a result link of its
 * own. Only the reply's own top-level links are followed. */
static void test_take_hostile_input(void) {
  flyte_action a;
  char err[512] = "";
  static const char *const bodies[] = {
      /* the attack as reported: the input first, 1e400 after a fake link */
      "{\"command\":\"go\",\"input\":{\"x\":{\"href\":\"" EVIL_URL "\"},"
      "\"n\":1e400},\"links\":" REAL_LINKS "}",
      /* the input also holds a whole links array, with a good rel */
      "{\"input\":{\"links\":[{\"href\":\"" EVIL_URL "\",\"rel\":\"x#/"
      "actionResult\"}],\"n\":1e400},\"command\":\"go\",\"links\":" REAL_LINKS
      "}",
      /* links first, input last */
      "{\"links\":" REAL_LINKS ",\"command\":\"go\",\"input\":[{\"href\":"
      "\"" EVIL_URL "\",\"rel\":\"actionResult\"},-1e400]}",
      /* whitespace everywhere, and a member the host does not use */
      " \r\n{ \"other\" : {\"links\":[]} ,\n\t\"links\" :\n" REAL_LINKS
      " , \"input\" : { \"href\" : \"" EVIL_URL "\" , \"n\" : 1e400 } ,"
      " \"command\" : \"go\" } \n",
      /* strings in the input with brackets, quotes and backslashes */
      "{\"command\":\"go\",\"input\":{\"s\":\"]}\\\"],\\\"links\\\":[{\\\""
      "href\\\":\\\"" EVIL_URL "\\\"}]\\\\\",\"t\":\"{[\\\\\",\"n\":1e400},"
      "\"links\":" REAL_LINKS "}",
  };
  for (size_t i = 0; i < sizeof bodies / sizeof *bodies; i++) {
    CHECK(take(bodies[i], &a, err, sizeof err) == FLYTE_TAKE_ACTION);
    CHECK_STR(a.result_url, REAL_URL);
    CHECK_STR(a.id, "9");
    CHECK_STR(a.command, "go");
    CHECK(a.input == NULL);
    CHECK(a.input_error != NULL &&
          strstr(a.input_error, "real number overflow") != NULL);
    if (a.input_error && !strstr(a.input_error, "real number overflow"))
      fprintf(stderr, "body %zu: input_error '%s'\n", i, a.input_error);
    flyte_action_free(&a);
  }

  /* the same replies read as they stream, as one too large to keep is:
   * in chunks of every size, the link is still the reply's own */
  for (size_t i = 0; i < sizeof bodies / sizeof *bodies; i++) {
    size_t len = strlen(bodies[i]);
    for (size_t chunk = 1; chunk <= len; chunk = chunk < 8 ? chunk + 1
                                                            : chunk * 3) {
      flyte_take_scan *t = flyte_take_scan_new();
      for (size_t off = 0; off < len; off += chunk)
        flyte_take_scan_feed(t, bodies[i] + off,
                             len - off < chunk ? len - off : chunk);
      flyte_take_result rc = flyte_take_scan_finish(t, 200, len, 100, &a, err,
                                                    sizeof err);
      CHECK(rc == FLYTE_TAKE_ACTION);
      if (rc != FLYTE_TAKE_ACTION) {
        fprintf(stderr, "body %zu, chunks of %zu: %s\n", i, chunk, err);
      } else {
        CHECK_STR(a.result_url, REAL_URL);
        CHECK_STR(a.command, "go");
        CHECK(a.input == NULL && a.input_error &&
              strstr(a.input_error, "over the host's limit of 100 bytes"));
      }
      flyte_action_free(&a);
      flyte_take_scan_free(t);
    }
  }
  /* a command name of 1 KiB or more: the link is still followed, and the
   * action ends FATAL under a stand-in name */
  {
    char body[4096];
    int n = snprintf(body, sizeof body, "{\"command\":\"");
    memset(body + n, 'c', 2000);
    snprintf(body + n + 2000, sizeof body - (size_t)n - 2000,
             "\",\"links\":" REAL_LINKS "}");
    flyte_take_scan *t = flyte_take_scan_new();
    flyte_take_scan_feed(t, body, strlen(body));
    CHECK(flyte_take_scan_finish(t, 200, 9999, 100, &a, err, sizeof err) ==
          FLYTE_TAKE_ACTION);
    CHECK_STR(a.result_url, REAL_URL);
    CHECK_STR(a.command, "(a command name of 1 KiB or more)");
    CHECK(a.input_error != NULL);
    flyte_action_free(&a);
    flyte_take_scan_free(t);
  }

  /* no top-level links (only one inside the input), or two: no action */
  static const char *const linkless[] = {
      "{\"command\":\"go\",\"input\":{\"links\":" REAL_LINKS "}}",
      "{\"links\":" REAL_LINKS ",\"links\":" REAL_LINKS "}",
      "{\"links\":" REAL_LINKS, /* cut short */
  };
  for (size_t i = 0; i < sizeof linkless / sizeof *linkless; i++) {
    flyte_take_scan *t = flyte_take_scan_new();
    flyte_take_scan_feed(t, linkless[i], strlen(linkless[i]));
    CHECK(flyte_take_scan_finish(t, 200, 999, 100, &a, err, sizeof err) ==
          FLYTE_TAKE_ERROR);
    CHECK(strstr(err, "999 bytes, over the host's limit of 100 bytes") != NULL);
    flyte_take_scan_free(t);
  }

  /* a good input that holds links: it is the handler's, nothing more */
  CHECK(take("{\"command\":\"go\",\"input\":{\"links\":[{\"href\":\"" EVIL_URL
             "\",\"rel\":\"actionResult\"}]},\"links\":" REAL_LINKS "}",
             &a, err, sizeof err) == FLYTE_TAKE_ACTION);
  CHECK_STR(a.result_url, REAL_URL);
  CHECK(a.input_error == NULL);
  CHECK_STR(json_string_value(json_object_get(
                json_array_get(json_object_get(a.input, "links"), 0), "href")),
            EVIL_URL);
  flyte_action_free(&a);

  /* an escaped key is the key it decodes to */
  CHECK(take("{\"comm\\u0061nd\":\"go\",\"\\u006cinks\":" REAL_LINKS
             ",\"input\\u0000\":{\"links\":[]},\"inp\\/ut\":1}",
             &a, err, sizeof err) == FLYTE_TAKE_ACTION);
  CHECK_STR(a.result_url, REAL_URL);
  CHECK_STR(a.command, "go");
  CHECK(a.input == NULL && a.input_error == NULL); /* no key "input" */
  flyte_action_free(&a);

  /* no top-level links: an error, whatever the input holds */
  static const char *const no_links[] = {
      "{\"command\":\"go\",\"input\":{\"x\":{\"href\":\"" EVIL_URL "\"},"
      "\"n\":1e400}}",
      "{\"command\":\"go\",\"input\":{\"links\":[{\"href\":\"" EVIL_URL
      "\",\"rel\":\"actionResult\"}]}}",
      "{\"command\":\"go\",\"input\":{\"links\":[{\"href\":\"" EVIL_URL
      "\",\"rel\":\"actionResult\"}],\"n\":1e400}}",
      "{\"command\":\"go\",\"input\":\"\\\",\\\"links\\\":[{\\\"href\\\":\\\""
      EVIL_URL "\\\",\\\"rel\\\":\\\"actionResult\\\"}]\"}",
  };
  for (size_t i = 0; i < sizeof no_links / sizeof *no_links; i++) {
    CHECK(take(no_links[i], &a, err, sizeof err) == FLYTE_TAKE_ERROR);
    CHECK_STR(err, "take: the action has no link with a rel ending in "
                   "actionResult (it cannot be completed)");
    CHECK(a.result_url == NULL && a.input_error == NULL && a.command == NULL);
  }

  /* links that cannot be read, or twice: nothing is followed */
  CHECK(take("{\"command\":\"go\",\"links\":[{\"href\":\"" REAL_URL
             "\",\"rel\":\"actionResult\",\"n\":1e400}]}",
             &a, err, sizeof err) == FLYTE_TAKE_ERROR);
  CHECK(strstr(err, "take: the reply's links cannot be read (real number "
                    "overflow") == err);
  CHECK(take("{\"links\":" REAL_LINKS ",\"input\":1,\"links\":[{\"href\":\""
             EVIL_URL "\",\"rel\":\"actionResult\"}]}",
             &a, err, sizeof err) == FLYTE_TAKE_ERROR);
  CHECK(strstr(err, "more than one 'links'") != NULL);
  /* an input given twice is not guessed at */
  CHECK(take("{\"input\":1,\"links\":" REAL_LINKS ",\"input\":2}", &a, err,
             sizeof err) == FLYTE_TAKE_ACTION);
  CHECK(a.input == NULL);
  CHECK_STR(a.input_error, "the reply holds more than one 'input'");
  flyte_action_free(&a);
  /* a command that is not a string */
  CHECK(take("{\"command\":[1e400],\"links\":" REAL_LINKS "}", &a, err,
             sizeof err) == FLYTE_TAKE_ACTION);
  CHECK_STR(a.command, "");
  flyte_action_free(&a);

  /* not an object, or not one object: an error naming why */
  static const char *const broken[] = {
      "", "   ", "[]", "\"links\"", "{", "{\"links\"", "{\"links\":",
      "{\"links\":" REAL_LINKS, "{\"links\":" REAL_LINKS "}}",
      "{\"links\":" REAL_LINKS "} {}", "{\"links\":" REAL_LINKS ",}",
      "{links:" REAL_LINKS "}", "{\"links\" " REAL_LINKS "}",
      "{\"links\":" REAL_LINKS " \"input\":1}", "{\"input\":,\"links\":"
      REAL_LINKS "}", "{\"input\":]\"links\":" REAL_LINKS "}",
      "{\"input\":\"\\", "{\"input\":\"abc\\\"}", "{\"input\":[[[",
      "{\"\\x\":1,\"links\":" REAL_LINKS "}", "{} x", "{}}", " { ] ",
  };
  for (size_t i = 0; i < sizeof broken / sizeof *broken; i++) {
    CHECK(take(broken[i], &a, err, sizeof err) == FLYTE_TAKE_ERROR);
    CHECK(strstr(err, "take: response is not a JSON object (") == err);
    CHECK(strstr(err, "may have handed out an action") != NULL);
    CHECK(a.result_url == NULL && a.command == NULL && a.id == NULL);
  }
  /* an empty object is an object without links */
  CHECK(take(" { } ", &a, err, sizeof err) == FLYTE_TAKE_ERROR);
  CHECK(strstr(err, "no link with a rel ending in actionResult") != NULL);
  /* NUL bytes: the walk stops at none of them */
  static const char nul[] = "{\"x\":\"\0\",\"links\":" REAL_LINKS "}";
  CHECK(flyte_api_parse_take(200, nul, sizeof nul - 1, &a, err, sizeof err) ==
        FLYTE_TAKE_ACTION);
  CHECK_STR(a.result_url, REAL_URL);
  flyte_action_free(&a);
  /* a body cut anywhere never reads past its end (ASan in make sanitize) */
  static const char whole[] =
      "{\"command\":\"go\",\"input\":{\"s\":\"a\\\"b[{\",\"n\":[1e400,{}]},"
      "\"links\":" REAL_LINKS "}";
  for (size_t n = 0; n < sizeof whole - 1; n++) {
    char *cut = malloc(n ? n : 1);
    memcpy(cut, whole, n);
    CHECK(flyte_api_parse_take(200, cut, n, &a, err, sizeof err) ==
          FLYTE_TAKE_ERROR);
    free(cut);
  }
}

/* Where the token may go: the origins of the flyte-api alone. */
static void test_url_allowed(void) {
  char err[1024];
  flyte_api_origins_reset();
  /* before discovery, nothing */
  CHECK(flyte_api_url_allowed("http://api:8080/v1", err, sizeof err) == -1);
  CHECK_STR(err, "refused to send the token to http://api:8080 (link "
                 "http://api:8080/v1): not an origin of the flyte-api (none "
                 "yet: discovery has not run)");

  CHECK(flyte_api_allow_url("http://API:8080/v1") == 0);
  CHECK(flyte_api_allow_url("https://secure.example/x") == 0);
  CHECK(flyte_api_allow_url("http://[::1]:9/v1") == 0);
  CHECK(flyte_api_allow_url("http://api:8080/again") == 0); /* once only */
  CHECK(flyte_api_allow_url("h/v1") == -1);
  CHECK(flyte_api_allow_url("ftp://api:8080/") == -1);
  CHECK(flyte_api_allow_url(NULL) == -1);

  static const char *const allowed[] = {
      "http://api:8080/v1/packs/P/actions/1/result",
      "HTTP://Api:8080/", "http://api:8080", "http://user:pw@api:8080/x",
      "https://secure.example:443/a", "https://SECURE.example/b?c#d",
      "http://[::1]:9/x",
  };
  for (size_t i = 0; i < sizeof allowed / sizeof *allowed; i++) {
    if (flyte_api_url_allowed(allowed[i], err, sizeof err) != 0)
      fprintf(stderr, "not allowed: %s (%s)\n", allowed[i], err);
    CHECK(flyte_api_url_allowed(allowed[i], err, sizeof err) == 0);
  }
  static const char *const refused[] = {
      "http://api:8081/v1", "https://api:8080/v1", "http://api/v1",
      "http://api:8080@evil/", "http://api:8080@evil:8080/",
      "http://evil/?http://api:8080/", "http://evil#@api:8080/",
      "http://evil/http://api:8080/", "http://api.evil:8080/",
      "http://secure.example/", "https://secure.example:8443/",
      "http://[::2]:9/", "http://127.0.0.1:18555/steal/actions/zzz/result",
      "ftp://api:8080/", "api:8080/v1", "//api:8080/v1", "",
      " http://api:8080/", "http://api:8080\n/", NULL,
  };
  for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
    err[0] = '\0';
    if (flyte_api_url_allowed(refused[i], err, sizeof err) != -1)
      fprintf(stderr, "allowed: %s\n", refused[i] ? refused[i] : "(null)");
    CHECK(strstr(err, "refused to send the token to ") == err);
    CHECK(strstr(err, "http://api:8080, https://secure.example:443, "
                      "http://[::1]:9") != NULL);
  }
  flyte_api_url_allowed("http://api:8080@evil/x", err, sizeof err);
  CHECK_STR(err, "refused to send the token to http://evil:80 (link "
                 "http://api:8080@evil/x): not an origin of the flyte-api "
                 "(http://api:8080, https://secure.example:443, "
                 "http://[::1]:9)");
  flyte_api_url_allowed("api\n/x", err, sizeof err);
  CHECK(strstr(err, "refused to send the token to 'api?/x': not an http(s) "
                    "URL with a host") == err);

  flyte_api_origins_reset();
  CHECK(flyte_api_url_allowed("http://api:8080/v1", err, sizeof err) == -1);
}

/* The requests themselves, against two stand-in APIs over 127.0.0.1: one
 * is the flyte-api, the other must receive nothing. */
static long connections(flyte_http *plain, int port) {
  char url[128];
  flyte_http_resp r;
  snprintf(url, sizeof url, "http://127.0.0.1:%d/dev/state", port);
  flyte_http_req req = {.method = "GET", .url = url, .json = 1};
  if (flyte_http_request(plain, &req, &r) != 0 || r.status != 200) return -1;
  json_t *j = json_loads(r.body, 0, NULL);
  long n = (long)json_integer_value(json_object_get(j, "connections"));
  json_decref(j);
  return n;
}

static void test_requests_refused(void) {
  char err[1024];
  flyte_standin_opts so = {NULL, 0, "t0ken", NULL, NULL};
  flyte_standin *api = flyte_standin_start(&so, err, sizeof err);
  flyte_standin *other = flyte_standin_start(&so, err, sizeof err);
  flyte_http_opts ho = {"t0ken", 0, 5000, 0, NULL};
  flyte_http *http = flyte_http_new(&ho);
  flyte_http_opts po = {NULL, 0, 5000, 0, NULL};
  flyte_http *plain = flyte_http_new(&po);
  CHECK(api != NULL && other != NULL && http != NULL && plain != NULL);
  if (!api || !other || !http || !plain) goto cleanup;
  char root[64], elsewhere[128];
  snprintf(root, sizeof root, "http://127.0.0.1:%d",
           flyte_standin_port(api));
  snprintf(elsewhere, sizeof elsewhere,
           "http://127.0.0.1:%d/v1/packs/P/actions/1/result",
           flyte_standin_port(other));
  flyte_api_origins_reset();

  /* before discovery nothing is allowed: a take is refused */
  flyte_action a;
  char take_url[128];
  snprintf(take_url, sizeof take_url, "%s/v1/packs/P/actions/take", root);
  CHECK(flyte_api_take(http, take_url, &a, err, sizeof err) ==
        FLYTE_TAKE_ERROR);
  CHECK(strstr(err, "take: refused to send the token to ") == err);

  flyte_api_root r;
  CHECK(flyte_api_discover(http, root, &r, err, sizeof err) == 0);
  CHECK(flyte_api_url_allowed(r.packs_url, err, sizeof err) == 0);
  CHECK(flyte_api_url_allowed(take_url, err, sizeof err) == 0);
  char status[512];
  CHECK(flyte_api_health(http, r.health_url, status, sizeof status) == 1);
  flyte_api_root_free(&r);

  /* a link to another origin: refused, nothing sent */
  CHECK(flyte_api_post(http, "result", elsewhere, "{}", 2, err, sizeof err) ==
        -1);
  CHECK(strstr(err, "post: refused to send the token to http://127.0.0.1:") ==
        err);
  CHECK(strstr(err, root) != NULL);
  CHECK(flyte_api_take(http, elsewhere, &a, err, sizeof err) ==
        FLYTE_TAKE_ERROR);
  CHECK(strstr(err, "take: refused") == err);
  flyte_api_pack p;
  CHECK(flyte_api_register(http, elsewhere, "{}", 2, &p, err, sizeof err) ==
        -1);
  CHECK(strstr(err, "registration: refused") == err);
  CHECK(flyte_api_health(http, elsewhere, status, sizeof status) == 0);
  CHECK(strstr(status, "health: refused") == status);
  /* the other one saw only this question about what it saw */
  CHECK(connections(plain, flyte_standin_port(other)) == 1);
  flyte_api_origins_reset();
cleanup:
  flyte_http_free(http);
  flyte_http_free(plain);
  if (api) flyte_standin_stop(api);
  if (other) flyte_standin_stop(other);
}

int main(void) {
  test_find_link();
  test_discovery();
  test_registration();
  test_take();
  test_take_unreadable();
  test_take_hostile_input();
  test_url_allowed();
  flyte_http_global_init();
  test_requests_refused();
  flyte_http_global_cleanup();
  TEST_DONE();
}
