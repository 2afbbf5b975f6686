/* health.c - the pack's health server on libmicrohttpd.
 *
 * One thread per connection, so that a slow check for one caller does not
 * hold the listening socket; the callback serialises what it must.
 */
#include "health.h"

#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct flyte_health {
  struct MHD_Daemon *daemon;
  flyte_health_fn fn;
  void *ud;
};

static enum MHD_Result answer(void *cls, struct MHD_Connection *c,
                              const char *url, const char *method,
                              const char *version, const char *upload,
                              size_t *upload_size, void **con_cls) {
  flyte_health *h = cls;
  (void)version, (void)upload;
  if (*con_cls == NULL) { /* first call: headers only */
    *con_cls = h;
    return MHD_YES;
  }
  if (*upload_size) { /* ignore any body */
    *upload_size = 0;
    return MHD_YES;
  }
  struct MHD_Response *r;
  int status = 500;
  const char *type = "application/json";
  if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
    static const char msg[] = "{\"error\":\"method not allowed\"}";
    r = MHD_create_response_from_buffer(sizeof msg - 1, (void *)msg,
                                        MHD_RESPMEM_PERSISTENT);
    status = MHD_HTTP_METHOD_NOT_ALLOWED;
    MHD_add_response_header(r, "Allow", "GET, HEAD");
  } else {
    char *body = h->fn(h->ud, url, &status, &type);
    if (body == NULL) {
      static const char msg[] = "{\"error\":\"out of memory\"}";
      r = MHD_create_response_from_buffer(sizeof msg - 1, (void *)msg,
                                          MHD_RESPMEM_PERSISTENT);
      status = 500;
    } else {
      r = MHD_create_response_from_buffer(strlen(body), body,
                                          MHD_RESPMEM_MUST_FREE);
    }
  }
  if (r == NULL) return MHD_NO;
  MHD_add_response_header(r, "Content-Type", type);
  enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
  MHD_destroy_response(r);
  return ret;
}

flyte_health *flyte_health_start(int port, flyte_health_fn fn, void *ud,
                                 char *err, unsigned long errlen) {
  flyte_health *h = calloc(1, sizeof *h);
  if (h == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  h->fn = fn;
  h->ud = ud;
  /* a thread per connection, so that a slow check holds up no other;
   * poll(), since select() cannot watch a descriptor past 1023 */
  const unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD |
                         MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL;
  for (int dual = 1; dual >= 0 && h->daemon == NULL; dual--) /* no IPv6? */
    h->daemon = MHD_start_daemon(
        flags | (dual ? MHD_USE_DUAL_STACK : 0), (uint16_t)port, NULL, NULL,
        answer, h, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30,
        MHD_OPTION_END);
  if (h->daemon == NULL) {
    snprintf(err, errlen,
             "cannot listen on port %d for health checks (in use? set "
             "FLYTE_HEALTH_PORT, or 0 to turn it off)",
             port);
    free(h);
    return NULL;
  }
  return h;
}

void flyte_health_stop(flyte_health *h) {
  if (h == NULL) return;
  MHD_stop_daemon(h->daemon);
  free(h);
}
