/* calc: a small expression compiler and bytecode VM, an ELF test fixture.
 *
 * Built twice by ../build.sh: REL=1 (version "a") and REL=2 (version "b", a point
 * release: hex literals and comments in the tokenizer near the start of the file,
 * so that later code shifts; a larger stack; one more global).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef REL
#define REL 1
#endif

#if REL >= 2
#define CALC_VERSION "calc 1.4.3"
#define MAX_STACK 128
#else
#define CALC_VERSION "calc 1.4.2"
#define MAX_STACK 64
#endif
#define MAX_CODE 512
#define MAX_VARS 26

enum tok { T_END, T_NUM, T_IDENT, T_PLUS, T_MINUS, T_STAR, T_SLASH, T_PCT, T_LP, T_RP,
           T_COMMA, T_EQ, T_LT, T_GT, T_AMP, T_BAR, T_CARET, T_TILDE, T_BANG, T_QUEST,
           T_COLON, T_ERR };

enum op { OP_PUSH, OP_LOAD, OP_STORE, OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_MOD, OP_NEG,
          OP_AND, OP_OR, OP_XOR, OP_NOT, OP_LNOT, OP_LT, OP_GT, OP_EQ, OP_CALL, OP_JZ,
          OP_JMP, OP_DUP, OP_POP, OP_SHL, OP_SHR, OP_HALT };

struct token { enum tok kind; int64_t value; char name[16]; };
struct insn { enum op op; int64_t arg; };
struct lexer { const char *p; struct token cur; };

long calc_evaluations;               /* global, counted by main */
int64_t calc_vars[MAX_VARS];
static struct insn code[MAX_CODE];
static int ncode;
static const char *last_error;
#if REL >= 2
unsigned long calc_ops_executed;     /* new in 1.4.3 */
#endif

static const char *const error_text[] = {
  "ok", "unexpected character", "number too large", "expected ')'",
  "expected expression", "code too long", "stack overflow", "stack underflow",
  "division by zero", "unknown function", "bad argument count", "expected ':'",
};

static void fail(int code_no) { if (!last_error) last_error = error_text[code_no]; }

static int is_digit(int c) { return c >= '0' && c <= '9'; }
static int is_alpha(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }

#if REL >= 2
static int hex_value(int c)
{
  if (is_digit(c)) return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static const char *skip_space_and_comments(const char *p)
{
  for (;;) {
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    if (*p != '#') return p;
    while (*p && *p != '\n') p++;
  }
}
#endif

static int64_t lex_number(struct lexer *lx)
{
  int64_t v = 0;
#if REL >= 2
  if (lx->p[0] == '0' && (lx->p[1] == 'x' || lx->p[1] == 'X')) {
    lx->p += 2;
    while (hex_value(*lx->p) >= 0) {
      if (v > (INT64_MAX >> 4)) { fail(2); return 0; }
      v = (v << 4) | hex_value(*lx->p++);
    }
    return v;
  }
#endif
  while (is_digit(*lx->p)) {
    if (v > (INT64_MAX - 9) / 10) { fail(2); return 0; }
    v = v * 10 + (*lx->p++ - '0');
  }
  return v;
}

static void next(struct lexer *lx)
{
  struct token *t = &lx->cur;
#if REL >= 2
  lx->p = skip_space_and_comments(lx->p);
#else
  while (*lx->p == ' ' || *lx->p == '\t' || *lx->p == '\n') lx->p++;
#endif
  memset(t, 0, sizeof *t);
  if (!*lx->p) { t->kind = T_END; return; }
  if (is_digit(*lx->p)) { t->kind = T_NUM; t->value = lex_number(lx); return; }
  if (is_alpha(*lx->p)) {
    size_t n = 0;
    while (is_alpha(*lx->p) || is_digit(*lx->p)) {
      if (n < sizeof t->name - 1) t->name[n++] = *lx->p;
      lx->p++;
    }
    t->kind = T_IDENT;
    return;
  }
  switch (*lx->p++) {
  case '+': t->kind = T_PLUS; break;
  case '-': t->kind = T_MINUS; break;
  case '*': t->kind = T_STAR; break;
  case '/': t->kind = T_SLASH; break;
  case '%': t->kind = T_PCT; break;
  case '(': t->kind = T_LP; break;
  case ')': t->kind = T_RP; break;
  case ',': t->kind = T_COMMA; break;
  case '=': t->kind = T_EQ; break;
  case '<': t->kind = T_LT; break;
  case '>': t->kind = T_GT; break;
  case '&': t->kind = T_AMP; break;
  case '|': t->kind = T_BAR; break;
  case '^': t->kind = T_CARET; break;
  case '~': t->kind = T_TILDE; break;
  case '!': t->kind = T_BANG; break;
  case '?': t->kind = T_QUEST; break;
  case ':': t->kind = T_COLON; break;
  default: t->kind = T_ERR; fail(1); break;
  }
}

static int emit(enum op op, int64_t arg)
{
  if (ncode >= MAX_CODE) { fail(5); return ncode - 1; }
  code[ncode].op = op;
  code[ncode].arg = arg;
  return ncode++;
}

/* builtins, called through a table of function pointers */
typedef int64_t (*builtin_fn)(const int64_t *args);
static int64_t b_abs(const int64_t *a) { return a[0] < 0 ? -a[0] : a[0]; }
static int64_t b_min(const int64_t *a) { return a[0] < a[1] ? a[0] : a[1]; }
static int64_t b_max(const int64_t *a) { return a[0] > a[1] ? a[0] : a[1]; }
static int64_t b_gcd(const int64_t *a)
{
  int64_t x = b_abs(a), y = b_abs(a + 1);
  while (y) { int64_t t = x % y; x = y; y = t; }
  return x;
}
static int64_t b_pow(const int64_t *a)
{
  int64_t r = 1, b = a[0], e = a[1];
  if (e < 0) return 0;
  while (e) { if (e & 1) r *= b; b *= b; e >>= 1; }
  return r;
}
static int64_t b_isqrt(const int64_t *a)
{
  int64_t lo = 0, hi = a[0] < 3037000499 ? a[0] : 3037000499;
  if (a[0] < 0) return -1;
  while (lo < hi) { int64_t m = (lo + hi + 1) / 2; if (m * m <= a[0]) lo = m; else hi = m - 1; }
  return lo;
}
static int64_t b_fib(const int64_t *a)
{
  int64_t x = 0, y = 1, i;
  for (i = 0; i < a[0] && i < 92; i++) { int64_t t = x + y; x = y; y = t; }
  return x;
}
static int64_t b_popcount(const int64_t *a)
{
  uint64_t v = (uint64_t)a[0]; int64_t n = 0;
  while (v) { v &= v - 1; n++; }
  return n;
}
static int64_t b_clamp(const int64_t *a) { return a[0] < a[1] ? a[1] : a[0] > a[2] ? a[2] : a[0]; }

static const struct builtin { const char *name; int argc; builtin_fn fn; } builtins[] = {
  { "abs", 1, b_abs }, { "min", 2, b_min }, { "max", 2, b_max }, { "gcd", 2, b_gcd },
  { "pow", 2, b_pow }, { "isqrt", 1, b_isqrt }, { "fib", 1, b_fib },
  { "popcount", 1, b_popcount }, { "clamp", 3, b_clamp },
};

static int find_builtin(const char *name)
{
  size_t i;
  for (i = 0; i < sizeof builtins / sizeof builtins[0]; i++)
    if (strcmp(builtins[i].name, name) == 0) return (int)i;
  return -1;
}

/* recursive descent: expr := cond; cond := bitor ['?' expr ':' expr]; ... */
static void parse_expr(struct lexer *lx);

static void parse_primary(struct lexer *lx)
{
  struct token t = lx->cur;
  switch (t.kind) {
  case T_NUM: next(lx); emit(OP_PUSH, t.value); break;
  case T_LP:
    next(lx); parse_expr(lx);
    if (lx->cur.kind != T_RP) { fail(3); return; }
    next(lx); break;
  case T_MINUS: next(lx); parse_primary(lx); emit(OP_NEG, 0); break;
  case T_TILDE: next(lx); parse_primary(lx); emit(OP_NOT, 0); break;
  case T_BANG: next(lx); parse_primary(lx); emit(OP_LNOT, 0); break;
  case T_IDENT:
    next(lx);
    if (lx->cur.kind == T_LP) {
      int f = find_builtin(t.name), argc = 0;
      next(lx);
      if (lx->cur.kind != T_RP) {
        for (;;) { parse_expr(lx); argc++; if (lx->cur.kind != T_COMMA) break; next(lx); }
      }
      if (lx->cur.kind != T_RP) { fail(3); return; }
      next(lx);
      if (f < 0) { fail(9); return; }
      if (argc != builtins[f].argc) { fail(10); return; }
      emit(OP_CALL, f);
    } else if (t.name[1] == 0 && t.name[0] >= 'a' && t.name[0] <= 'z') {
      if (lx->cur.kind == T_EQ) { next(lx); parse_expr(lx); emit(OP_DUP, 0); emit(OP_STORE, t.name[0] - 'a'); }
      else emit(OP_LOAD, t.name[0] - 'a');
    } else fail(9);
    break;
  default: fail(4); break;
  }
}

static void parse_mul(struct lexer *lx)
{
  parse_primary(lx);
  while (lx->cur.kind == T_STAR || lx->cur.kind == T_SLASH || lx->cur.kind == T_PCT) {
    enum tok k = lx->cur.kind;
    next(lx); parse_primary(lx);
    emit(k == T_STAR ? OP_MUL : k == T_SLASH ? OP_DIV : OP_MOD, 0);
  }
}

static void parse_add(struct lexer *lx)
{
  parse_mul(lx);
  while (lx->cur.kind == T_PLUS || lx->cur.kind == T_MINUS) {
    enum tok k = lx->cur.kind;
    next(lx); parse_mul(lx);
    emit(k == T_PLUS ? OP_ADD : OP_SUB, 0);
  }
}

static void parse_shift(struct lexer *lx)
{
  parse_add(lx);
  while ((lx->cur.kind == T_LT || lx->cur.kind == T_GT) && lx->p[0] == lx->p[-1]) {
    enum tok k = lx->cur.kind;
    lx->p++; next(lx); parse_add(lx);
    emit(k == T_LT ? OP_SHL : OP_SHR, 0);
  }
}

static void parse_cmp(struct lexer *lx)
{
  parse_shift(lx);
  while (lx->cur.kind == T_LT || lx->cur.kind == T_GT || lx->cur.kind == T_EQ) {
    enum tok k = lx->cur.kind;
    if (k == T_EQ) { if (lx->p[0] != '=') return; lx->p++; }
    next(lx); parse_shift(lx);
    emit(k == T_LT ? OP_LT : k == T_GT ? OP_GT : OP_EQ, 0);
  }
}

static void parse_bits(struct lexer *lx)
{
  parse_cmp(lx);
  while (lx->cur.kind == T_AMP || lx->cur.kind == T_BAR || lx->cur.kind == T_CARET) {
    enum tok k = lx->cur.kind;
    next(lx); parse_cmp(lx);
    emit(k == T_AMP ? OP_AND : k == T_BAR ? OP_OR : OP_XOR, 0);
  }
}

static void parse_expr(struct lexer *lx)
{
  parse_bits(lx);
  if (lx->cur.kind == T_QUEST) {
    int jz, jmp;
    next(lx);
    jz = emit(OP_JZ, 0);
    parse_expr(lx);
    jmp = emit(OP_JMP, 0);
    if (lx->cur.kind != T_COLON) { fail(11); return; }
    next(lx);
    code[jz].arg = ncode;
    parse_expr(lx);
    code[jmp].arg = ncode;
  }
}

static int run(int64_t *result)
{
  int64_t stack[MAX_STACK];
  int sp = 0, pc = 0;
  for (;;) {
    struct insn in = code[pc++];
#if REL >= 2
    calc_ops_executed++;
#endif
    if (sp >= MAX_STACK - 4) { fail(6); return -1; }
    switch (in.op) {
    case OP_PUSH: stack[sp++] = in.arg; break;
    case OP_LOAD: stack[sp++] = calc_vars[in.arg]; break;
    case OP_STORE: calc_vars[in.arg] = stack[--sp]; break;
    case OP_ADD: sp--; stack[sp - 1] += stack[sp]; break;
    case OP_SUB: sp--; stack[sp - 1] -= stack[sp]; break;
    case OP_MUL: sp--; stack[sp - 1] *= stack[sp]; break;
    case OP_DIV: sp--; if (!stack[sp]) { fail(8); return -1; } stack[sp - 1] /= stack[sp]; break;
    case OP_MOD: sp--; if (!stack[sp]) { fail(8); return -1; } stack[sp - 1] %= stack[sp]; break;
    case OP_NEG: stack[sp - 1] = -stack[sp - 1]; break;
    case OP_AND: sp--; stack[sp - 1] &= stack[sp]; break;
    case OP_OR: sp--; stack[sp - 1] |= stack[sp]; break;
    case OP_XOR: sp--; stack[sp - 1] ^= stack[sp]; break;
    case OP_NOT: stack[sp - 1] = ~stack[sp - 1]; break;
    case OP_LNOT: stack[sp - 1] = !stack[sp - 1]; break;
    case OP_LT: sp--; stack[sp - 1] = stack[sp - 1] < stack[sp]; break;
    case OP_GT: sp--; stack[sp - 1] = stack[sp - 1] > stack[sp]; break;
    case OP_EQ: sp--; stack[sp - 1] = stack[sp - 1] == stack[sp]; break;
    case OP_SHL: sp--; stack[sp - 1] = (int64_t)((uint64_t)stack[sp - 1] << (stack[sp] & 63)); break;
    case OP_SHR: sp--; stack[sp - 1] >>= (stack[sp] & 63); break;
    case OP_CALL: {
      const struct builtin *b = &builtins[in.arg];
      sp -= b->argc;
      if (sp < 0) { fail(7); return -1; }
      stack[sp] = b->fn(&stack[sp]);
      sp++;
      break;
    }
    case OP_JZ: if (!stack[--sp]) pc = (int)in.arg; break;
    case OP_JMP: pc = (int)in.arg; break;
    case OP_DUP: stack[sp] = stack[sp - 1]; sp++; break;
    case OP_POP: sp--; break;
    case OP_HALT:
      if (sp != 1) { fail(7); return -1; }
      *result = stack[0];
      return 0;
    }
  }
}

static const char *op_name(enum op op)
{
  switch (op) {
  case OP_PUSH: return "push"; case OP_LOAD: return "load"; case OP_STORE: return "store";
  case OP_ADD: return "add"; case OP_SUB: return "sub"; case OP_MUL: return "mul";
  case OP_DIV: return "div"; case OP_MOD: return "mod"; case OP_NEG: return "neg";
  case OP_AND: return "and"; case OP_OR: return "or"; case OP_XOR: return "xor";
  case OP_NOT: return "not"; case OP_LNOT: return "lnot"; case OP_LT: return "lt";
  case OP_GT: return "gt"; case OP_EQ: return "eq"; case OP_CALL: return "call";
  case OP_JZ: return "jz"; case OP_JMP: return "jmp"; case OP_DUP: return "dup";
  case OP_POP: return "pop"; case OP_SHL: return "shl"; case OP_SHR: return "shr";
  case OP_HALT: return "halt";
  }
  return "?";
}

static void disassemble(FILE *out)
{
  int i;
  for (i = 0; i < ncode; i++)
    fprintf(out, "%4d  %-6s %lld\n", i, op_name(code[i].op), (long long)code[i].arg);
}

int calc_eval(const char *src, int64_t *result, int dump)
{
  struct lexer lx = { src, { T_END, 0, "" } };
  ncode = 0;
  last_error = NULL;
  next(&lx);
  parse_expr(&lx);
  if (!last_error && lx.cur.kind != T_END) fail(1);
  emit(OP_HALT, 0);
  if (last_error) return -1;
  if (dump) disassemble(stderr);
  calc_evaluations++;
  return run(result);
}

int main(int argc, char **argv)
{
  char line[1024];
  int i, dump = 0, status = 0;
  int64_t r;
  for (i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--version") == 0) { puts(CALC_VERSION); return 0; }
    if (strcmp(argv[i], "-d") == 0) { dump = 1; continue; }
    if (calc_eval(argv[i], &r, dump) == 0) printf("%lld\n", (long long)r);
    else { fprintf(stderr, "calc: %s: %s\n", argv[i], last_error); status = 1; }
  }
  if (argc > 1 && !(argc == 2 && dump)) return status;
  while (fgets(line, sizeof line, stdin)) {
    line[strcspn(line, "\n")] = 0;
    if (!line[0]) continue;
    if (calc_eval(line, &r, dump) == 0) printf("%lld\n", (long long)r);
    else { fprintf(stderr, "calc: %s\n", last_error); status = 1; }
  }
#if REL >= 2
  if (getenv("CALC_STATS")) fprintf(stderr, "%ld evaluations, %lu ops\n", calc_evaluations, calc_ops_executed);
#endif
  return status;
}
