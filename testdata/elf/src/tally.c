/* tally: counts the words of its input files with libtally. ELF test fixture (see calc.c).
 * Version "b" (REL=2) adds a --stats option parsed early and a larger read buffer. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tally.h"

#ifndef REL
#define REL 1
#endif
#if REL >= 2
#define READ_CHUNK 16384
extern unsigned long tally_stop_words_skipped;
static int show_stats;
#else
#define READ_CHUNK 4096
#endif
extern unsigned long tally_total_words;

struct options { enum tally_format fmt; enum tally_hash hash; size_t top; size_t buckets; const char *query; };

static const char usage_text[] =
  "usage: tally [-f text|csv|json|tsv|markdown|xml|ini] [-h fnv1a|djb2|sdbm|murmur]\n"
  "             [-n TOP] [-b BUCKETS] [-q WORD] [FILE...]\n"
  "Counts the words of FILEs (or standard input) and prints the most frequent ones.\n";

static void usage(int status) { fputs(usage_text, status ? stderr : stdout); exit(status); }

#if REL >= 2
static void print_stats(const struct tally *t)
{
  fprintf(stderr, "tally: %lu words, %zu distinct, %lu stop words skipped\n",
          tally_total_words, tally_size(t), tally_stop_words_skipped);
}
#endif

static int parse_hash(const char *s, enum tally_hash *h)
{
  static const struct { const char *name; enum tally_hash h; } names[] = {
    { "fnv1a", TALLY_FNV1A }, { "djb2", TALLY_DJB2 }, { "sdbm", TALLY_SDBM }, { "murmur", TALLY_MURMURISH },
  };
  size_t i;
  for (i = 0; i < sizeof names / sizeof names[0]; i++)
    if (strcmp(s, names[i].name) == 0) { *h = names[i].h; return 0; }
  return -1;
}

static size_t parse_size(const char *s, const char *what)
{
  char *end;
  unsigned long v;
  errno = 0;
  v = strtoul(s, &end, 10);
  if (errno || *end || end == s) { fprintf(stderr, "tally: bad %s: %s\n", what, s); exit(2); }
  return v;
}

static int count_file(struct tally *t, FILE *in)
{
  char *buf = malloc(READ_CHUNK + 1), *carry = NULL;
  size_t n, carry_len = 0;
  if (!buf) return -1;
  while ((n = fread(buf, 1, READ_CHUNK, in)) > 0) {
    size_t cut = n, total;
    char *text;
    buf[n] = 0;
    while (cut > 0 && buf[cut - 1] != ' ' && buf[cut - 1] != '\n') cut--;
    if (cut == 0) cut = n;
    total = carry_len + cut;
    text = malloc(total + 1);
    if (!text) { free(buf); free(carry); return -1; }
    if (carry_len) memcpy(text, carry, carry_len);
    memcpy(text + carry_len, buf, cut);
    text[total] = 0;
    tally_add_text(t, text);
    free(text);
    free(carry);
    carry_len = n - cut;
    carry = malloc(carry_len + 1);
    if (!carry) { free(buf); return -1; }
    memcpy(carry, buf + cut, carry_len);
  }
  if (carry_len) { carry[carry_len] = 0; tally_add_text(t, carry); }
  free(carry);
  free(buf);
  return ferror(in) ? -1 : 0;
}

int main(int argc, char **argv)
{
  struct options o = { TALLY_TEXT, TALLY_FNV1A, 10, 0, NULL };
  struct tally *t;
  int i, status = 0, files = 0;
  for (i = 1; i < argc && argv[i][0] == '-' && argv[i][1]; i++) {
    const char *a = argv[i];
#if REL >= 2
    if (strcmp(a, "--stats") == 0) { show_stats = 1; continue; }
#endif
    if (strcmp(a, "--version") == 0) { puts(tally_version()); return 0; }
    if (a[2] || i + 1 >= argc) usage(2);
    switch (a[1]) {
    case 'f': if (tally_format_parse(argv[++i], &o.fmt)) usage(2); break;
    case 'h': if (parse_hash(argv[++i], &o.hash)) usage(2); break;
    case 'n': o.top = parse_size(argv[++i], "count"); break;
    case 'b': o.buckets = parse_size(argv[++i], "bucket count"); break;
    case 'q': o.query = argv[++i]; break;
    default: usage(2);
    }
  }
  t = tally_new(o.hash, o.buckets);
  if (!t) { fputs("tally: out of memory\n", stderr); return 1; }
  for (; i < argc; i++) {
    FILE *in = strcmp(argv[i], "-") ? fopen(argv[i], "r") : stdin;
    files++;
    if (!in) { fprintf(stderr, "tally: %s: %s\n", argv[i], strerror(errno)); status = 1; continue; }
    if (count_file(t, in)) { fprintf(stderr, "tally: %s: read error\n", argv[i]); status = 1; }
    if (in != stdin) fclose(in);
  }
  if (!files && count_file(t, stdin)) status = 1;
  if (o.query) printf("%s %lu\n", o.query, tally_get(t, o.query));
  else if (tally_write(t, stdout, o.fmt, o.top)) status = 1;
#if REL >= 2
  if (show_stats) print_stats(t);
#endif
  tally_free(t);
  return status;
}
