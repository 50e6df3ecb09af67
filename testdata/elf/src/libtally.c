/* libtally: a shared library fixture. Version "b" (REL=2) changes the normalisation at
 * the start of the file (folds more characters), adds a stop-word filter function near
 * the start, raises the default bucket count and adds one exported global. */
#include <ctype.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "tally.h"

#ifndef REL
#define REL 1
#endif
#if REL >= 2
#define TALLY_VERSION "libtally 2.1.1"
#define DEFAULT_BUCKETS 1021
#else
#define TALLY_VERSION "libtally 2.1.0"
#define DEFAULT_BUCKETS 509
#endif
#define MAX_WORD 64

struct node { struct node *next; unsigned long count; uint32_t hash; char word[]; };
struct tally {
  struct node **buckets;
  size_t nbuckets, size;
  enum tally_hash hash_kind;
  uint32_t (*hash)(const char *s, size_t n);
};

unsigned long tally_total_words;                 /* exported */
#if REL >= 2
unsigned long tally_stop_words_skipped;          /* exported, new in 2.1.1 */
#endif

static int fold(int c)
{
#if REL >= 2
  if (c == '\'' || c == '-') return c;
  if ((unsigned char)c >= 0xc0 && (unsigned char)c <= 0xdd) return c + 0x20;
#endif
  return tolower((unsigned char)c);
}

#if REL >= 2
static const char *const stop_words[] = {
  "a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "in", "is", "it",
  "of", "on", "or", "that", "the", "to", "was", "with",
};

static int is_stop_word(const char *w)
{
  size_t lo = 0, hi = sizeof stop_words / sizeof stop_words[0];
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    int c = strcmp(w, stop_words[mid]);
    if (c == 0) return 1;
    if (c < 0) hi = mid; else lo = mid + 1;
  }
  return 0;
}
#endif

static uint32_t h_fnv1a(const char *s, size_t n)
{
  uint32_t h = 2166136261u;
  while (n--) { h ^= (unsigned char)*s++; h *= 16777619u; }
  return h;
}
static uint32_t h_djb2(const char *s, size_t n)
{
  uint32_t h = 5381;
  while (n--) h = h * 33 + (unsigned char)*s++;
  return h;
}
static uint32_t h_sdbm(const char *s, size_t n)
{
  uint32_t h = 0;
  while (n--) h = (unsigned char)*s++ + (h << 6) + (h << 16) - h;
  return h;
}
static uint32_t h_murmurish(const char *s, size_t n)
{
  uint32_t h = 0x9747b28cu ^ (uint32_t)n;
  while (n--) { h ^= (unsigned char)*s++; h *= 0x5bd1e995u; h ^= h >> 15; }
  h ^= h >> 13; h *= 0x5bd1e995u; h ^= h >> 15;
  return h;
}
static uint32_t (*const hash_table[])(const char *, size_t) = { h_fnv1a, h_djb2, h_sdbm, h_murmurish };

const char *tally_version(void) { return TALLY_VERSION; }

struct tally *tally_new(enum tally_hash hash, size_t buckets)
{
  struct tally *t;
  if ((unsigned)hash >= sizeof hash_table / sizeof hash_table[0]) return NULL;
  t = calloc(1, sizeof *t);
  if (!t) return NULL;
  t->nbuckets = buckets ? buckets : DEFAULT_BUCKETS;
  t->buckets = calloc(t->nbuckets, sizeof *t->buckets);
  if (!t->buckets) { free(t); return NULL; }
  t->hash_kind = hash;
  t->hash = hash_table[hash];
  return t;
}

void tally_free(struct tally *t)
{
  size_t i;
  if (!t) return;
  for (i = 0; i < t->nbuckets; i++) {
    struct node *n = t->buckets[i];
    while (n) { struct node *next = n->next; free(n); n = next; }
  }
  free(t->buckets);
  free(t);
}

static struct node *lookup(const struct tally *t, const char *w, size_t len, uint32_t h)
{
  struct node *n;
  for (n = t->buckets[h % t->nbuckets]; n; n = n->next)
    if (n->hash == h && strncmp(n->word, w, len) == 0 && n->word[len] == 0) return n;
  return NULL;
}

int tally_add(struct tally *t, const char *word, size_t len)
{
  char buf[MAX_WORD];
  size_t i;
  uint32_t h;
  struct node *n;
  if (len == 0) return 0;
  if (len >= MAX_WORD) len = MAX_WORD - 1;
  for (i = 0; i < len; i++) buf[i] = (char)fold(word[i]);
  buf[len] = 0;
#if REL >= 2
  if (is_stop_word(buf)) { tally_stop_words_skipped++; return 0; }
#endif
  h = t->hash(buf, len);
  tally_total_words++;
  n = lookup(t, buf, len, h);
  if (n) { n->count++; return 0; }
  n = malloc(sizeof *n + len + 1);
  if (!n) return -1;
  memcpy(n->word, buf, len + 1);
  n->count = 1;
  n->hash = h;
  n->next = t->buckets[h % t->nbuckets];
  t->buckets[h % t->nbuckets] = n;
  t->size++;
  return 1;
}

static int word_char(int c)
{
  return isalnum((unsigned char)c) || c == '\'' || c == '_' || (unsigned char)c >= 0x80;
}

size_t tally_add_text(struct tally *t, const char *text)
{
  size_t added = 0;
  while (*text) {
    const char *s;
    while (*text && !word_char(*text)) text++;
    s = text;
    while (*text && word_char(*text)) text++;
    if (text > s && tally_add(t, s, (size_t)(text - s)) > 0) added++;
  }
  return added;
}

unsigned long tally_get(const struct tally *t, const char *word)
{
  size_t len = strlen(word);
  const struct node *n = lookup(t, word, len, t->hash(word, len));
  return n ? n->count : 0;
}

size_t tally_size(const struct tally *t) { return t->size; }

static int cmp_entry(const void *a, const void *b)
{
  const struct tally_entry *x = a, *y = b;
  if (x->count != y->count) return x->count < y->count ? 1 : -1;
  return strcmp(x->word, y->word);
}

size_t tally_top(const struct tally *t, struct tally_entry *out, size_t n)
{
  struct tally_entry *all;
  size_t i, k = 0;
  all = malloc((t->size ? t->size : 1) * sizeof *all);
  if (!all) return 0;
  for (i = 0; i < t->nbuckets; i++) {
    const struct node *p;
    for (p = t->buckets[i]; p; p = p->next) { all[k].word = p->word; all[k].count = p->count; k++; }
  }
  qsort(all, k, sizeof *all, cmp_entry);
  if (n > k) n = k;
  memcpy(out, all, n * sizeof *out);
  free(all);
  return n;
}

double tally_entropy(const struct tally *t)
{
  double total = 0, e = 0;
  size_t i;
  const struct node *p;
  for (i = 0; i < t->nbuckets; i++)
    for (p = t->buckets[i]; p; p = p->next) total += (double)p->count;
  if (total == 0) return 0;
  for (i = 0; i < t->nbuckets; i++)
    for (p = t->buckets[i]; p; p = p->next) { double q = (double)p->count / total; e -= q * log2(q); }
  return e;
}

static const char *const format_names[] = { "text", "csv", "json", "tsv", "markdown", "xml", "ini" };

const char *tally_format_name(enum tally_format fmt)
{
  return (unsigned)fmt < sizeof format_names / sizeof format_names[0] ? format_names[fmt] : "unknown";
}

int tally_format_parse(const char *name, enum tally_format *fmt)
{
  unsigned i;
  for (i = 0; i < sizeof format_names / sizeof format_names[0]; i++)
    if (strcmp(name, format_names[i]) == 0) { *fmt = (enum tally_format)i; return 0; }
  return -1;
}

static void write_escaped(FILE *out, const char *w, enum tally_format fmt)
{
  for (; *w; w++) {
    switch (fmt) {
    case TALLY_JSON: if (*w == '"' || *w == '\\') fputc('\\', out); fputc(*w, out); break;
    case TALLY_XML:
      if (*w == '<') fputs("&lt;", out);
      else if (*w == '&') fputs("&amp;", out);
      else if (*w == '\'') fputs("&apos;", out);
      else fputc(*w, out);
      break;
    case TALLY_CSV: if (*w == '"') fputc('"', out); fputc(*w, out); break;
    case TALLY_MARKDOWN: if (*w == '|' || *w == '*' || *w == '_') fputc('\\', out); fputc(*w, out); break;
    default: fputc(*w, out); break;
    }
  }
}

int tally_write(const struct tally *t, FILE *out, enum tally_format fmt, size_t n)
{
  struct tally_entry *top = malloc((n ? n : 1) * sizeof *top);
  size_t i, k;
  if (!top) return -1;
  k = tally_top(t, top, n);
  switch (fmt) {
  case TALLY_TEXT: fprintf(out, "%zu distinct words\n", t->size); break;
  case TALLY_CSV: fputs("word,count\n", out); break;
  case TALLY_JSON: fputs("{\"words\": [", out); break;
  case TALLY_TSV: fputs("word\tcount\n", out); break;
  case TALLY_MARKDOWN: fputs("| word | count |\n|---|---:|\n", out); break;
  case TALLY_XML: fputs("<?xml version=\"1.0\"?>\n<tally>\n", out); break;
  case TALLY_INI: fputs("[tally]\n", out); break;
  }
  for (i = 0; i < k; i++) {
    switch (fmt) {
    case TALLY_TEXT: fprintf(out, "%8lu  ", top[i].count); write_escaped(out, top[i].word, fmt); fputc('\n', out); break;
    case TALLY_CSV: fputc('"', out); write_escaped(out, top[i].word, fmt); fprintf(out, "\",%lu\n", top[i].count); break;
    case TALLY_JSON:
      fprintf(out, "%s{\"word\": \"", i ? ", " : "");
      write_escaped(out, top[i].word, fmt);
      fprintf(out, "\", \"count\": %lu}", top[i].count);
      break;
    case TALLY_TSV: write_escaped(out, top[i].word, fmt); fprintf(out, "\t%lu\n", top[i].count); break;
    case TALLY_MARKDOWN: fputs("| ", out); write_escaped(out, top[i].word, fmt); fprintf(out, " | %lu |\n", top[i].count); break;
    case TALLY_XML: fputs("  <word count=\"", out); fprintf(out, "%lu\">", top[i].count); write_escaped(out, top[i].word, fmt); fputs("</word>\n", out); break;
    case TALLY_INI: write_escaped(out, top[i].word, fmt); fprintf(out, " = %lu\n", top[i].count); break;
    }
  }
  switch (fmt) {
  case TALLY_JSON: fprintf(out, "], \"distinct\": %zu, \"entropy\": %.4f}\n", t->size, tally_entropy(t)); break;
  case TALLY_XML: fputs("</tally>\n", out); break;
  case TALLY_TEXT: fprintf(out, "entropy %.4f bits\n", tally_entropy(t)); break;
  default: break;
  }
  free(top);
  return ferror(out) ? -1 : 0;
}
