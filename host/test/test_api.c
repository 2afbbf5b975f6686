/* test_api.c - finding links by rel suffix. */
#include "../api.h"

#include "test.h"

int main(void) {
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
  TEST_DONE();
}
