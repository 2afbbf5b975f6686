/* floor.c - what any host on flyte-host's libraries pays on this machine,
 * for bench/bench.lua to print beside the host's own figures.
 *
 *   flyte-bench-floor memory
 *     RssAnon, in kB, of a process that has loaded the host's libraries
 *     (libcurl and what it pulls in, libmicrohttpd, Lua, jansson),
 *     initialised libcurl and opened one Lua state, and nothing else:
 *     relocated library data and the TLS stacks' start-up allocations
 *     count as RssAnon.
 *
 *   flyte-bench-floor http URL N
 *     CPU (user + sys) per request of N POSTs of "{}" to URL (the
 *     stand-in's take route on an empty queue, answering 204), first
 *     through the host's own client (host/http.c, on libcurl), then over
 *     a bare kept-alive socket that writes the request and reads the
 *     answer with a syscall each. An empty take is lighter than an
 *     action's take and result, so this is a lower bound.
 *
 * Prints one JSON object on stdout.
 */
#define _GNU_SOURCE
#include <curl/curl.h>
#include <jansson.h>

#include "../host/http.h"
#include <lauxlib.h>
#include <lualib.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

static long rss_anon_kb(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long kb = -1;
  while (f && fgets(line, sizeof line, f))
    if (sscanf(line, "RssAnon: %ld kB", &kb) == 1) break;
  if (f) fclose(f);
  return kb;
}

static double cpu_seconds(void) {
  struct rusage r;
  getrusage(RUSAGE_SELF, &r);
  return (double)(r.ru_utime.tv_sec + r.ru_stime.tv_sec) +
         (double)(r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1e6;
}

static int memory(void) {
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return 1;
  lua_State *L = luaL_newstate();
  if (L == NULL) return 1;
  luaL_openlibs(L);
  json_t *j = json_object();
  printf("{\"rss_anon_kb\": %ld, \"libmicrohttpd\": \"%s\"}\n", rss_anon_kb(),
         MHD_get_version());
  json_decref(j);
  lua_close(L);
  curl_global_cleanup();
  return 0;
}

/* CPU per request through the host's own HTTP client (host/http.c, on
 * libcurl): one client, its connection reused. Returns -1 unless every
 * answer is a 204. */
static double with_curl(const char *url, long n) {
  flyte_http_opts opts = {NULL, 0, 10000, 0, NULL};
  flyte_http *h = flyte_http_new(&opts);
  if (h == NULL) return -1;
  flyte_http_req req = {.method = "POST", .url = url, .body = "{}",
                        .body_len = 2, .json = 1};
  flyte_http_resp resp;
  double start = 0;
  for (long i = -1; i < n; i++) { /* the first one connects: not counted */
    if (i == 0) start = cpu_seconds();
    if (flyte_http_request(h, &req, &resp) != 0 || resp.status != 204) {
      fprintf(stderr, "flyte-bench-floor: %s: %s (HTTP %ld)\n", url,
              resp.error[0] ? resp.error : "not a 204", resp.status);
      flyte_http_free(h);
      return -1;
    }
  }
  double spent = cpu_seconds() - start;
  flyte_http_free(h);
  return spent / (double)n;
}

/* CPU per request over a bare socket: the request written in one send,
 * the answer (headers only, as a 204 has) read with one recv, or more if
 * it came in pieces. Returns -1 unless every answer is a 204. */
static double with_socket(const char *url, long n) {
  CURLU *u = curl_url();
  char *host = NULL, *port = NULL, *path = NULL;
  if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
      curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
      curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK ||
      curl_url_get(u, CURLUPART_PATH, &path, 0) != CURLUE_OK)
    return -1;
  struct addrinfo hints = {0}, *ai = NULL;
  hints.ai_socktype = SOCK_STREAM;
  int fd = -1;
  if (getaddrinfo(host, port, &hints, &ai) == 0) {
    fd = socket(ai->ai_family, SOCK_STREAM, 0);
    if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
      close(fd);
      fd = -1;
    }
    freeaddrinfo(ai);
  }
  char request[1024];
  int len = snprintf(request, sizeof request,
                     "POST %s HTTP/1.1\r\nHost: %s:%s\r\n"
                     "Content-Type: application/json\r\n"
                     "Content-Length: 2\r\n\r\n{}",
                     path, host, port);
  curl_free(host), curl_free(port), curl_free(path);
  curl_url_cleanup(u);
  if (fd < 0) return -1;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  char answer[4096];
  double start = cpu_seconds();
  for (long i = 0; i < n; i++) {
    if (send(fd, request, (size_t)len, MSG_NOSIGNAL) != len) break;
    size_t got = 0;
    ssize_t r;
    while ((r = recv(fd, answer + got, sizeof answer - 1 - got, 0)) > 0) {
      got += (size_t)r;
      answer[got] = '\0';
      if (strstr(answer, "\r\n\r\n") || got == sizeof answer - 1) break;
    }
    if (r <= 0 || strncmp(answer, "HTTP/1.1 204", 12) != 0) {
      fprintf(stderr, "flyte-bench-floor: %s: not a 204: %.40s\n", url,
              got ? answer : "(nothing)");
      close(fd);
      return -1;
    }
  }
  double spent = cpu_seconds() - start;
  close(fd);
  return spent / (double)n;
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "memory") == 0) return memory();
  if (argc == 4 && strcmp(argv[1], "http") == 0) {
    long n = atol(argv[3]);
    if (n <= 0) {
      fprintf(stderr, "flyte-bench-floor: N must be a whole number above 0, "
                      "not '%s'\n", argv[3]);
      return 2;
    }
    if (flyte_http_global_init() != 0) return 1;
    double curl_s = with_curl(argv[2], n);
    double socket_s = curl_s < 0 ? -1 : with_socket(argv[2], n);
    if (socket_s < 0) return 1;
    printf("{\"requests\": %ld, \"libcurl_us\": %.2f, \"socket_us\": %.2f}\n",
           n, curl_s * 1e6, socket_s * 1e6);
    flyte_http_global_cleanup();
    return 0;
  }
  fprintf(stderr, "usage: flyte-bench-floor memory | http URL N\n");
  return 2;
}
