/* libtally: count words, keep statistics, format reports. ELF test fixture (see calc.c). */
#ifndef TALLY_H
#define TALLY_H
#include <stddef.h>
#include <stdio.h>

struct tally;
enum tally_format { TALLY_TEXT, TALLY_CSV, TALLY_JSON, TALLY_TSV, TALLY_MARKDOWN, TALLY_XML, TALLY_INI };
enum tally_hash { TALLY_FNV1A, TALLY_DJB2, TALLY_SDBM, TALLY_MURMURISH };

struct tally_entry { const char *word; unsigned long count; };

const char *tally_version(void);
struct tally *tally_new(enum tally_hash hash, size_t buckets);
void tally_free(struct tally *t);
int tally_add(struct tally *t, const char *word, size_t len);
size_t tally_add_text(struct tally *t, const char *text);
unsigned long tally_get(const struct tally *t, const char *word);
size_t tally_size(const struct tally *t);
size_t tally_top(const struct tally *t, struct tally_entry *out, size_t n);
int tally_write(const struct tally *t, FILE *out, enum tally_format fmt, size_t n);
const char *tally_format_name(enum tally_format fmt);
int tally_format_parse(const char *name, enum tally_format *fmt);
double tally_entropy(const struct tally *t);
#endif
