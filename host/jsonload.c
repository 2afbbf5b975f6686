/* jsonload.c - jansson's parser, with object keys holding \u0000.
 *
 * Each key holding \u0000 is renamed in the text to a placeholder that the
 * text does not contain, jansson parses, and the keys are named back in
 * the tree. Text without \u0000 goes to jansson as it is.
 */
#define _GNU_SOURCE /* memmem */
#include "jsonload.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define PLACEHOLDER "\xee\x80\x80" "flyte-nul-key-" /* U+E000: private use */

typedef struct {
  json_t **keys; /* the real keys, decoded (JSON strings) */
  size_t n, cap;
  char tag[96]; /* PLACEHOLDER, random hex and a try number */
  size_t tag_len;
} renames;

/* Keys of the tree that begin with the tag. */
static size_t count_tagged(json_t *j, const renames *r, int depth) {
  size_t n = 0;
  if (depth > FLYTE_JSONLOAD_MAX_DEPTH) return 0;
  if (json_is_array(j)) {
    for (size_t i = 0; i < json_array_size(j); i++)
      n += count_tagged(json_array_get(j, i), r, depth + 1);
  } else if (json_is_object(j)) {
    const char *k;
    size_t len;
    json_t *v;
    json_object_keylen_foreach(j, k, len, v) {
      if (len > r->tag_len && memcmp(k, r->tag, r->tag_len) == 0) n++;
      n += count_tagged(v, r, depth + 1);
    }
  }
  return n;
}

static int rename_back(json_t *j, const renames *r, int depth) {
  if (depth > FLYTE_JSONLOAD_MAX_DEPTH) return 0; /* pushing says so */
  if (json_is_array(j)) {
    for (size_t i = 0; i < json_array_size(j); i++)
      if (rename_back(json_array_get(j, i), r, depth + 1)) return -1;
    return 0;
  }
  if (!json_is_object(j)) return 0;
  /* the tagged keys of this object, in one pass; then each renamed (the
   * object must not change under its iterator) */
  size_t n = 0, cap = 0, *which = NULL;
  for (void *it = json_object_iter(j); it; it = json_object_iter_next(j, it)) {
    const char *k = json_object_iter_key(it);
    size_t len = json_object_iter_key_len(it);
    if (len <= r->tag_len || memcmp(k, r->tag, r->tag_len) != 0) continue;
    if (n == cap) {
      cap = cap ? cap * 2 : 8;
      size_t *grown = realloc(which, cap * sizeof *grown);
      if (grown == NULL) {
        free(which);
        return -1;
      }
      which = grown;
    }
    which[n++] = (size_t)strtoull(k + r->tag_len, NULL, 10);
  }
  for (size_t m = 0; m < n; m++) {
    size_t i = which[m];
    char name[128];
    int len = snprintf(name, sizeof name, "%s%zu", r->tag, i);
    json_t *v = json_incref(json_object_getn(j, name, (size_t)len));
    json_t *real = i < r->n ? r->keys[i] : NULL;
    json_object_deln(j, name, (size_t)len);
    if (v == NULL || real == NULL ||
        json_object_setn_new(j, json_string_value(real),
                             json_string_length(real), v)) {
      free(which);
      return -1;
    }
  }
  free(which);
  const char *k;
  size_t len;
  json_t *v;
  json_object_keylen_foreach(j, k, len, v) {
    (void)k, (void)len;
    if (rename_back(v, r, depth + 1)) return -1;
  }
  return 0;
}

static const char nul_escape[] = "\\u0000";

typedef struct {
  char *data;
  size_t len, cap;
} buf;

/* Appends; -1 when out of memory (then data is freed and NULL). */
static int add(buf *b, const char *p, size_t n) {
  if (b->data == NULL) return -1;
  if (n > b->cap - b->len) {
    size_t cap = (b->len + n) * 2;
    char *grown = realloc(b->data, cap);
    if (grown == NULL) {
      free(b->data);
      b->data = NULL;
      return -1;
    }
    b->data = grown;
    b->cap = cap;
  }
  memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

/* One try with tag number `n`. *clash: the text holds a key that reads as
 * the tag (it may be written with escapes): try another. */
static json_t *attempt(const char *text, size_t len, size_t flags,
                       json_error_t *je, unsigned n, int *clash) {
  renames r = {0};
  /* a random part: a key of the text cannot be made to read as the tag,
   * escapes or not (a duplicate key would otherwise hide one) */
  unsigned char rnd[16] = {0};
  if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    memcpy(rnd, &ts, sizeof ts < sizeof rnd ? sizeof ts : sizeof rnd);
  }
  char hex[33];
  for (int i = 0; i < 16; i++) snprintf(hex + 2 * i, 3, "%02x", rnd[i]);
  r.tag_len = (size_t)snprintf(r.tag, sizeof r.tag, PLACEHOLDER "%s%u-",
                               hex, n);
  *clash = memmem(text, len, r.tag, r.tag_len) != NULL;
  if (*clash) return NULL;
  buf out = {malloc(len + 1), 0, len + 1};
  json_t *j = NULL;
  if (out.data == NULL) goto fail;
  for (size_t i = 0; i < len;) {
    if (text[i] != '"') { /* outside strings: as it is, up to the next */
      const char *q = memchr(text + i, '"', len - i);
      size_t run = q ? (size_t)(q - (text + i)) : len - i;
      if (add(&out, text + i, run)) goto fail;
      i += run;
      continue;
    }
    size_t end = i + 1; /* past the closing quote */
    while (end < len && text[end] != '"') end += text[end] == '\\' ? 2 : 1;
    end = end < len ? end + 1 : len;
    size_t after = end;
    while (after < len && (text[after] == ' ' || text[after] == '\t' ||
                           text[after] == '\n' || text[after] == '\r'))
      after++;
    json_t *real = NULL;
    if (after < len && text[after] == ':' &&
        memmem(text + i, end - i, nul_escape, 6) &&
        (real = json_loadb(text + i, end - i,
                           JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL)) != NULL &&
        json_is_string(real)) {
      if (r.n == r.cap) {
        size_t c = r.cap ? r.cap * 2 : 8;
        json_t **grown = realloc(r.keys, c * sizeof *grown);
        if (grown == NULL) {
          json_decref(real);
          goto fail;
        }
        r.keys = grown;
        r.cap = c;
      }
      char name[128];
      int m = snprintf(name, sizeof name, "\"%s%zu\"", r.tag, r.n);
      r.keys[r.n++] = real;
      if (add(&out, name, (size_t)m)) goto fail;
    } else {
      json_decref(real);
      if (add(&out, text + i, end - i)) goto fail;
    }
    i = end;
  }
  j = json_loadb(out.data, out.len, flags, je);
  if (j && count_tagged(j, &r, 1) != r.n) {
    *clash = 1;
    json_decref(j);
    j = NULL;
  } else if (j && rename_back(j, &r, 1)) {
    json_decref(j);
    j = NULL;
    if (je) snprintf(je->text, sizeof je->text, "out of memory");
  }
fail:
  if (j == NULL && !*clash && out.data == NULL && je)
    snprintf(je->text, sizeof je->text, "out of memory");
  for (size_t i = 0; i < r.n; i++) json_decref(r.keys[i]);
  free(r.keys);
  free(out.data);
  return j;
}

json_t *flyte_json_load(const char *text, size_t len, size_t flags,
                        json_error_t *je) {
  if (memmem(text, len, nul_escape, 6) == NULL)
    return json_loadb(text, len, flags, je);
  int clash = 1;
  json_t *j = NULL;
  /* each clash needs a key of the text: tries are few unless the text is
   * made to clash, and then it is refused */
  for (unsigned n = 0; n < 64 && clash; n++)
    j = attempt(text, len, flags, je, n, &clash);
  if (clash && je)
    snprintf(je->text, sizeof je->text,
             "object keys holding \\u0000 could not be read");
  return j;
}
