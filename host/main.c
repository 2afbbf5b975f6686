/* main.c - the flyte-host command line.
 *
 *   flyte-host run|check|invoke|dev|standin|test ...
 *
 * Reads the settings, sets up the log and libcurl once, and hands over to
 * the command. Bad settings exit 2 with one line naming the setting.
 */
#define _XOPEN_SOURCE 700 /* nftw */
#include <curl/curl.h>
#include <jansson.h>
#include <lua.h>
#include <microhttpd.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "host.h"
#include "log.h"
#include "pack.h"
#include "standin.h"
#include "stub.h"

#ifndef FLYTE_VERSION
#define FLYTE_VERSION "0.0.0"
#endif
#ifndef FLYTE_CORE_DIR
#define FLYTE_CORE_DIR "/usr/lib/flyte-host"
#endif

static const char usage[] =
    "usage: flyte-host COMMAND [OPTIONS] ...\n"
    "\n"
    "Runs Flyte packs written in Lua.\n"
    "\n"
    "commands:\n"
    "  run PACK.lua          register, poll, handle actions, serve health\n"
    "  check PACK.lua        validate; print the registration JSON; exit 1 on "
    "error\n"
    "  invoke PACK.lua COMMAND [INPUT_JSON]\n"
    "                        run one command locally, print the event JSON\n"
    "                        (exit 1 when the event is FATAL)\n"
    "  dev PACK.lua          run the pack against a stand-in flyte-api on\n"
    "                        127.0.0.1 (--port, default 8080; a page at /);\n"
    "                        --send 'COMMAND [INPUT_JSON]' queues an action\n"
    "                        at start; health on a free port unless\n"
    "                        --health-port; the outbox in a temporary folder\n"
    "                        unless --outbox\n"
    "  standin               run the stand-in flyte-api alone (--port, 0 for "
    "any)\n"
    "  stub [ROUTES_JSON]    a scripted HTTP server on 127.0.0.1 for specs\n"
    "                        (--port, default any; see flyte.testing's\n"
    "                        http_stub)\n"
    "  test [BUSTED ARGS]    run busted specs with flyte and flyte.testing on\n"
    "                        the path\n"
    "  --help, --version\n"
    "\n"
    "settings (environment variable, or flag; the flag wins):\n"
    "  FLYTE_API             --api URL          flyte-api root (required for "
    "run)\n"
    "  FLYTE_LABELS          --labels k=v,k=v   pack labels\n"
    "  FLYTE_API_TIMEOUT     --api-timeout S    per request (10)\n"
    "  FLYTE_JWT             (environment only) bearer token for the API\n"
    "  FLYTE_INSECURE        --insecure         do not verify TLS\n"
    "  FLYTE_POLL_INTERVAL   --poll-interval S  when idle (5, at least 0.5)\n"
    "  FLYTE_WORKERS         --workers N        threads (one per CPU)\n"
    "  FLYTE_CONCURRENCY     --concurrency N    actions at once (256)\n"
    "  FLYTE_HEALTH_PORT     --health-port N    health server (8090; 0: off)\n"
    "  FLYTE_RELOAD          --no-reload        watch the pack for changes "
    "(on)\n"
    "  FLYTE_HANDLER_TIMEOUT --handler-timeout S default command timeout "
    "(none)\n"
    "  FLYTE_MEMORY_LIMIT    --memory-limit N   per Lua state, e.g. 64MB "
    "(none)\n"
    "  FLYTE_SHUTDOWN_GRACE  --shutdown-grace S running handlers may finish "
    "(30)\n"
    "  FLYTE_OUTBOX          --outbox DIR       owed results and events on "
    "disk\n"
    "                                           (flyte-outbox; off: none)\n"
    "  FLYTE_OUTBOX_SYNC     --outbox-sync S    always (on disk before each step) "
    "or\n"
    "                                           off (written, not synced) "
    "(always)\n"
    "  FLYTE_LOG_LEVEL       --log-level L      debug, info, warn, error "
    "(info)\n"
    "  FLYTE_LOG_FORMAT      --log-format F     text or json (text)\n";

static void print_version(void) {
  curl_version_info_data *cv = curl_version_info(CURLVERSION_NOW);
  printf("flyte-host %s (%s, libcurl %s, libmicrohttpd %s, jansson %s)\n",
         FLYTE_VERSION, LUA_RELEASE, cv->version, MHD_get_version(),
         JANSSON_VERSION);
}

/* One line on stderr and exit status 2: a bad setting or command line. */
static int bad_usage(const char *msg) {
  fprintf(stderr, "flyte-host: %s\n", msg);
  return 2;
}

static int need_pack(const flyte_config *c, int extra_min, int extra_max) {
  if (c->nargs < 1) return bad_usage("missing PACK.lua (see flyte-host --help)");
  if (access(c->args[0], R_OK) != 0) {
    char msg[512];
    snprintf(msg, sizeof msg, "cannot read pack file '%s'", c->args[0]);
    return bad_usage(msg);
  }
  if (c->nargs - 1 < extra_min || c->nargs - 1 > extra_max)
    return bad_usage("wrong number of arguments (see flyte-host --help)");
  return 0;
}

/* ---- check / invoke -------------------------------------------------- */

static int cmd_check(const flyte_config *c) {
  char err[1024];
  int rc = need_pack(c, 0, 0);
  if (rc) return rc;
  flyte_pack *p = flyte_pack_open(c->args[0], NULL, 0, NULL, err, sizeof err);
  flyte_pack_info info;
  if (p == NULL ||
      flyte_pack_describe(p, c->labels, c->nlabels, &info, err, sizeof err)) {
    fprintf(stderr, "flyte-host: %s\n", err);
    flyte_pack_close(p);
    return 1;
  }
  char *pretty = flyte_pack_pretty(p, info.registration);
  printf("%s\n", pretty ? pretty : info.registration);
  free(pretty);
  flyte_pack_info_free(&info);
  flyte_pack_close(p);
  return 0;
}

static int cmd_invoke(const flyte_config *c) {
  char err[1024];
  int rc = need_pack(c, 1, 2);
  if (rc) return rc;
  json_t *input = NULL;
  if (c->nargs == 3) {
    json_error_t je;
    input = json_loads(c->args[2], JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (input == NULL) {
      snprintf(err, sizeof err, "INPUT_JSON is not valid JSON (column %d: %s)",
               je.column, je.text);
      return bad_usage(err);
    }
  }
  flyte_pack *p = flyte_pack_open(c->args[0], NULL, c->memory_limit, NULL, err,
                                  sizeof err);
  if (p == NULL) {
    fprintf(stderr, "flyte-host: %s\n", err);
    json_decref(input);
    return 1;
  }
  flyte_pack_result res;
  flyte_pack_run(p, NULL, c->args[1], input, NULL, c->handler_timeout,
                 &res);
  char *pretty = res.body ? flyte_pack_pretty_event(p, res.body) : NULL;
  printf("%s\n", pretty ? pretty : res.body ? res.body : "null");
  free(pretty);
  rc = res.fatal ? 1 : 0;
  free(res.body);
  flyte_pack_close(p);
  json_decref(input);
  return rc;
}

/* ---- standin / dev --------------------------------------------------- */

static void wait_for_signal(void) {
  sigset_t set;
  int sig;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  sigwait(&set, &sig);
}

static int cmd_standin(const flyte_config *c) {
  char err[512];
  if (c->nargs != 0) return bad_usage("standin takes no arguments");
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  flyte_standin_opts o = {"127.0.0.1", c->dev_port, c->jwt, NULL, NULL};
  flyte_standin *s = flyte_standin_start(&o, err, sizeof err);
  if (s == NULL) {
    fprintf(stderr, "flyte-host: %s\n", err);
    return 1;
  }
  printf("flyte-api stand-in on http://127.0.0.1:%d\n", flyte_standin_port(s));
  fflush(stdout);
  wait_for_signal();
  flyte_standin_stop(s);
  return 0;
}

/* `stub [--port N] [ROUTES_JSON]`: flyte.testing's http_stub. */
static int cmd_stub(const flyte_config *c) {
  char err[512];
  if (c->nargs > 1) return bad_usage("stub takes at most one argument, "
                                     "ROUTES_JSON");
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  flyte_stub *s = flyte_stub_start(c->dev_port_set ? c->dev_port : 0,
                                   c->nargs ? c->args[0] : NULL, err,
                                   sizeof err);
  if (s == NULL) {
    fprintf(stderr, "flyte-host: stub: %s\n", err);
    return 2;
  }
  printf("stub on http://127.0.0.1:%d\n", flyte_stub_port(s));
  fflush(stdout);
  wait_for_signal();
  flyte_stub_stop(s);
  return 0;
}

typedef struct {
  pthread_mutex_t mu;
  pthread_cond_t cond;
  int registered;
  flyte_standin *standin;
} dev_state;

static void dev_notify(void *ud, const char *kind, const char *pack_id,
                       const char *json) {
  dev_state *d = ud;
  if (strcmp(kind, "take") == 0) return; /* the result line says enough */
  flyte_info("[stand-in] %s%s%s: %s", kind, pack_id ? " for " : "",
             pack_id ? pack_id : "", json ? json : "");
  if (strcmp(kind, "registration") == 0) {
    pthread_mutex_lock(&d->mu);
    d->registered = 1;
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->mu);
  }
}

typedef struct {
  dev_state *dev;
  char *command;
  char *input;
} dev_send;

static void *dev_send_main(void *arg) {
  dev_send *s = arg;
  char err[256];
  pthread_mutex_lock(&s->dev->mu);
  while (!s->dev->registered) pthread_cond_wait(&s->dev->cond, &s->dev->mu);
  pthread_mutex_unlock(&s->dev->mu);
  if (flyte_standin_enqueue(s->dev->standin, NULL, s->command, s->input, err,
                            sizeof err) < 0)
    flyte_error("--send: %s", err);
  return NULL;
}

/* The first command's name in a registration body, for the curl hint. */
static char *first_command(const char *registration) {
  json_t *j = json_loads(registration, 0, NULL);
  const char *name = json_string_value(
      json_object_get(json_array_get(json_object_get(j, "commands"), 0),
                      "name"));
  char *copy = strdup(name ? name : "COMMAND");
  json_decref(j);
  return copy;
}

static void dev_code(void *ud, int ok, const char *error, const char *at,
                     const char *serving) {
  flyte_standin_set_code(ud, ok, error, at, serving);
}

static int remove_entry(const char *path, const struct stat *st, int type,
                        struct FTW *ftw) {
  (void)st, (void)type, (void)ftw;
  remove(path);
  return 0;
}

/* Removes a directory and what is in it. */
static void remove_tree(const char *dir) {
  nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int cmd_dev(flyte_config *c) {
  char err[1024];
  int rc = need_pack(c, 0, 0);
  if (rc) return rc;
  dev_send send = {0};
  if (c->dev_send) {
    char *space = strchr(c->dev_send, ' ');
    send.command = strndup(c->dev_send,
                           space ? (size_t)(space - c->dev_send)
                                 : strlen(c->dev_send));
    send.input = space ? strdup(space + 1) : NULL;
    if (send.input) {
      json_error_t je;
      json_t *j = json_loads(send.input, JSON_DECODE_ANY, &je);
      if (j == NULL) {
        free(send.command);
        free(send.input);
        return bad_usage("--send: the input after the command is not valid "
                         "JSON");
      }
      json_decref(j);
    }
  }

  /* Check the pack before starting anything. */
  flyte_pack *p = flyte_pack_open(c->args[0], NULL, 0, NULL, err, sizeof err);
  flyte_pack_info info = {0};
  if (p == NULL ||
      flyte_pack_describe(p, c->labels, c->nlabels, &info, err, sizeof err)) {
    fprintf(stderr, "flyte-host: %s\n", err); /* the pack is wrong: 1 */
    flyte_pack_close(p);
    free(send.command);
    free(send.input);
    return 1;
  }
  char *command = first_command(info.registration);
  flyte_pack_info_free(&info);
  flyte_pack_close(p);

  /* The host blocks signals for its own thread; the stand-in's threads
   * must not take them either. */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &set, NULL);

  dev_state dev = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0,
                   NULL};
  flyte_standin_opts o = {"127.0.0.1", c->dev_port, NULL, dev_notify, &dev};
  dev.standin = flyte_standin_start(&o, err, sizeof err);
  if (dev.standin == NULL) {
    fprintf(stderr, "flyte-host: stand-in flyte-api: %s\n", err);
    free(command);
    free(send.command);
    free(send.input);
    return 1;
  }
  /* A health server on a free port, unless one is set: a second dev (with
   * its own --port) must not fail on 8090. The host logs the port. */
  if (!c->health_port_set) c->health_port = -1;
  /* Its outbox in a folder of its own, removed at the end, unless one is
   * set: dev must not leave flyte-outbox/ in the author's repository. */
  char outbox_dir[256] = "";
  if (!c->outbox_set && c->outbox) {
    const char *tmp = getenv("TMPDIR");
    snprintf(outbox_dir, sizeof outbox_dir, "%s/flyte-dev-outbox.XXXXXX",
             tmp && *tmp ? tmp : "/tmp");
    free(c->outbox);
    c->outbox = mkdtemp(outbox_dir) ? strdup(outbox_dir) : NULL;
    if (c->outbox == NULL) outbox_dir[0] = '\0';
  }
  int port = flyte_standin_port(dev.standin);
  char api[64];
  snprintf(api, sizeof api, "http://127.0.0.1:%d", port);
  free(c->api);
  c->api = strdup(api);
  if (!c->poll_interval_set) c->poll_interval = 0.5;

  fprintf(stderr,
          "\nflyte-host dev: a stand-in flyte-api on %s (no Flyte server "
          "needed).\n"
          "Open %s/ in a browser to send actions and see results.\n"
          "Or send an action to the pack:\n"
          "  curl -s -X POST %s/dev/actions -d '{\"command\": \"%s\", "
          "\"input\": {}}'\n"
          "See everything that arrived:\n"
          "  curl -s %s/dev/state\n"
          "Stop with Ctrl-C.\n\n",
          api, api, api, command, api);
  free(command);

  /* the page shows a failed reload, and which code serves */
  flyte_host_on_reload(dev_code, dev.standin);

  pthread_t sender;
  int sending = 0;
  if (send.command) {
    send.dev = &dev;
    sending = pthread_create(&sender, NULL, dev_send_main, &send) == 0;
  }
  rc = flyte_host_run(c, c->args[0]);
  flyte_host_on_reload(NULL, NULL);
  if (sending) {
    pthread_mutex_lock(&dev.mu);
    int registered = dev.registered;
    pthread_mutex_unlock(&dev.mu);
    if (registered)
      pthread_join(sender, NULL);
    else
      pthread_detach(sender);
  }
  flyte_standin_stop(dev.standin);
  if (outbox_dir[0]) remove_tree(outbox_dir);
  free(send.command);
  free(send.input);
  return rc;
}

/* ---- test -------------------------------------------------------------- */

static int cmd_test(int argc, char **argv) {
  char path[8400], cpath[8400], self[4096];
  const char *lua_dir = flyte_lua_dir();
  const char *old = getenv("LUA_PATH");
  snprintf(path, sizeof path, "%s/?.lua;%s/?/init.lua;./?.lua;./?/init.lua;%s",
           lua_dir, lua_dir, old ? old : ";");
  /* flyte.core as a C module: beside an installed binary, else the build */
  char core_dir[4200];
  snprintf(core_dir, sizeof core_dir, "%s", FLYTE_CORE_DIR);
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n > 0) {
    self[n] = '\0';
    setenv("FLYTE_HOST_BIN", self, 0);
    char *slash = strrchr(self, '/'), probe[4300];
    if (slash) {
      *slash = '\0';
      snprintf(probe, sizeof probe, "%s/../lib/flyte-host/flyte/core.so",
               self);
      if (access(probe, R_OK) == 0)
        snprintf(core_dir, sizeof core_dir, "%s/../lib/flyte-host", self);
      *slash = '/';
    }
  }
  old = getenv("LUA_CPATH");
  snprintf(cpath, sizeof cpath, "%s/?.so;%s", core_dir, old ? old : ";");
  setenv("LUA_PATH", path, 1);
  setenv("LUA_CPATH", cpath, 1);
  const char *busted = getenv("FLYTE_BUSTED");
  if (busted == NULL) busted = "/usr/bin/busted";
  char **args = calloc((size_t)argc + 3, sizeof *args);
  if (args == NULL) return 1;
  args[0] = "lua5.4";
  args[1] = (char *)busted;
  for (int i = 0; i < argc; i++) args[i + 2] = argv[i];
  execvp(args[0], args);
  fprintf(stderr, "flyte-host: cannot run lua5.4 %s (install lua5.4 and "
                  "lua-busted)\n", busted);
  free(args);
  return 127;
}

int main(int argc, char **argv) {
  flyte_since_start_ms(); /* the clock for "registered N ms after start" */
  if (argc < 2 || strcmp(argv[1], "--help") == 0 ||
      strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
    fputs(usage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
    print_version();
    return 0;
  }
  const char *cmd = argv[1];
  if (strcmp(cmd, "test") == 0) return cmd_test(argc - 2, argv + 2);

  static const char *const commands[] = {"run", "check", "invoke", "dev",
                                         "standin", "stub", NULL};
  int known = 0;
  for (int i = 0; commands[i]; i++) known |= strcmp(cmd, commands[i]) == 0;
  if (!known) {
    char msg[256];
    snprintf(msg, sizeof msg, "unknown command '%s' (see flyte-host --help)",
             cmd);
    return bad_usage(msg);
  }

  /* COMMAND --help: the usage, which covers every command */
  for (int i = 2; i < argc; i++)
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      fputs(usage, stdout);
      return 0;
    }

  flyte_config cfg;
  char err[512];
  if (flyte_config_load(&cfg, argc - 2, argv + 2, err, sizeof err) != 0) {
    flyte_config_free(&cfg);
    return bad_usage(err);
  }
  flyte_log_setup((flyte_log_level)cfg.log_level,
                  (flyte_log_format)cfg.log_format);
  if (flyte_http_global_init() != 0) {
    fprintf(stderr, "flyte-host: cannot initialise libcurl\n");
    flyte_config_free(&cfg);
    return 1;
  }
  int rc;
  if (strcmp(cmd, "run") == 0) {
    rc = need_pack(&cfg, 0, 0);
    if (rc == 0) rc = flyte_host_run(&cfg, cfg.args[0]);
  } else if (strcmp(cmd, "check") == 0) {
    rc = cmd_check(&cfg);
  } else if (strcmp(cmd, "invoke") == 0) {
    rc = cmd_invoke(&cfg);
  } else if (strcmp(cmd, "dev") == 0) {
    rc = cmd_dev(&cfg);
  } else if (strcmp(cmd, "stub") == 0) {
    rc = cmd_stub(&cfg);
  } else {
    rc = cmd_standin(&cfg);
  }
  flyte_http_global_cleanup();
  flyte_config_free(&cfg);
  return rc;
}
