#!/usr/bin/env bash
# Compare our `delta` engine with peer delta tools on the benchmark corpus.
#
#   benches/compare.sh [--cache DIR] [--only NAME...] [--tools TOOL...] [--out FILE]
#                      [--timeout SEC] [--delta-bin PATH] [--hdiffz PATH] [--fresh] [--no-build]
#
#   --cache DIR      corpus directory (as for testdata/corpus.sh; default testdata/cache/corpus).
#                    Missing pairs are built first with testdata/corpus.sh unless --no-build.
#   --only NAME...   pairs to run (default: os-minor os-major binary sparse-shift random;
#                    also known: the held-out pairs alt-minor alt-major, run only when named)
#   --tools TOOL...  tools to run (default: delta zstd xdelta3 bsdiff hdiffpatch rdiff)
#   --out FILE       Markdown table (default testdata/cache/compare.md); a TSV of the raw
#                    numbers is written next to it (FILE with .tsv)
#   --timeout SEC    per gen/apply run (default 1200 = 20 min); a run over it is marked TIMEOUT
#   --delta-bin PATH our binary (default target/release/delta; never built by this script:
#                    cargo build --release -p delta-cli)
#   --hdiffz PATH    HDiffPatch's hdiffz (hpatchz is taken from the same directory). Default:
#                    hdiffz on PATH, else testdata/cache/tools/HDiffPatch/hdiffz, which is
#                    built there (git clone of sisong/HDiffPatch v4.12.0 + make) if missing
#                    (env HDP_GIT: another clone URL, e.g. a local mirror).
#                    Run as `hdiffz -m-6 -SD -c-zstd-21-24` (its strongest setting: in-memory
#                    suffix-array diff, one zstd-21 stream with a 2^24 window; hdiffz's own
#                    patch check after the diff is on, as by default) / `hpatchz OLD D OUT`.
#   --fresh          ignore cached rows (see below) and re-run everything
#
# Row cache: each (pair, tool) result is kept in <out dir>/compare-rows/ together with a key
# made of the pair files' size+mtime and the tool's identity (version string, or the sha256
# of the delta binary). A row whose key still matches is reused (marked "cached" in the TSV),
# so after rebuilding `delta`, re-running this script only re-runs the delta rows.
#
# Every run is measured with /usr/bin/time -v (wall time, max RSS of the process tree's
# largest process) under `timeout`. The runs are sequential; page cache is warmed with the
# pair's files before each generation. Output is checked with cmp.
set -euo pipefail
shopt -s inherit_errexit
set -E
trap 'echo "compare.sh: failed (exit $?) at line $LINENO: $BASH_COMMAND" >&2' ERR

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
CACHE="$ROOT/testdata/cache/corpus"
OUT="$ROOT/testdata/cache/compare.md"
ALL_PAIRS=(os-minor os-major binary sparse-shift random)
KNOWN_PAIRS=("${ALL_PAIRS[@]}" alt-minor alt-major)   # testdata/corpus.sh --list
ALL_TOOLS=(delta zstd xdelta3 bsdiff hdiffpatch rdiff)
PAIRS=() TOOLS=()
TIMEOUT=1200
DELTA_BIN="$ROOT/target/release/delta"
HDIFFZ=""
HDP_TAG=v4.12.0
HDP_GIT=${HDP_GIT:-https://github.com/sisong/HDiffPatch}   # env override: a local mirror
HDP_DIR="$ROOT/testdata/cache/tools/HDiffPatch"
HDP_ARGS=(-m-6 -SD -c-zstd-21-24)
FRESH=0 BUILD=1
BSDIFF_MAX=$((200 * 1024 * 1024))   # Android's kMaxBsdiffDestinationSize (200 MiB)
XDELTA_MAX_B=2147483648             # xdelta3 3.0.11: "-B: maximum value: 2147483648"

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --cache) CACHE=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    --delta-bin) DELTA_BIN=$2; shift 2 ;;
    --hdiffz) HDIFFZ=$2; shift 2 ;;
    --fresh) FRESH=1; shift ;;
    --no-build) BUILD=0; shift ;;
    --only) shift; while [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; do PAIRS+=("$1"); shift; done ;;
    --tools) shift; while [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; do TOOLS+=("$1"); shift; done ;;
    -h|--help) usage; exit 0 ;;
    *) echo "compare.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done
[ ${#PAIRS[@]} -gt 0 ] || PAIRS=("${ALL_PAIRS[@]}")
[ ${#TOOLS[@]} -gt 0 ] || TOOLS=("${ALL_TOOLS[@]}")
for t in "${TOOLS[@]}"; do
  case " ${ALL_TOOLS[*]} " in *" $t "*) ;; *) echo "compare.sh: unknown tool '$t' (known: ${ALL_TOOLS[*]})" >&2; exit 2 ;; esac
done
for p in "${PAIRS[@]}"; do
  case " ${KNOWN_PAIRS[*]} " in *" $p "*) ;; *) echo "compare.sh: unknown pair '$p' (known: ${KNOWN_PAIRS[*]})" >&2; exit 2 ;; esac
done
mkdir -p "$(dirname "$OUT")" "$CACHE"
CACHE=$(cd "$CACHE" && pwd)
OUT="$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")"
TSV="${OUT%.md}.tsv"
OUTDIR=$(dirname "$OUT")
ROWS="$OUTDIR/compare-rows"
WORK="$OUTDIR/compare-work"
mkdir -p "$ROWS" "$WORK"

log() { printf '[compare %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# ---------------------------------------------------------------- tools
APT_UPDATED=0
apt_install() {
  [ $APT_UPDATED = 1 ] || { apt-get update -qq >/dev/null 2>&1 || true; APT_UPDATED=1; }
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >&2
}
need_apt=()
[ -x /usr/bin/time ] || need_apt+=(time)
command -v timeout >/dev/null || need_apt+=(coreutils)
command -v cmp >/dev/null || need_apt+=(diffutils)
for t in "${TOOLS[@]}"; do
  case $t in
    zstd) command -v zstd >/dev/null || need_apt+=(zstd) ;;
    xdelta3) command -v xdelta3 >/dev/null || need_apt+=(xdelta3) ;;
    bsdiff) command -v bsdiff >/dev/null && command -v bspatch >/dev/null || need_apt+=(bsdiff) ;;
    rdiff) command -v rdiff >/dev/null || need_apt+=(rdiff); command -v zstd >/dev/null || need_apt+=(zstd) ;;
  esac
done
[ ${#need_apt[@]} -eq 0 ] || apt_install "${need_apt[@]}"

if [[ " ${TOOLS[*]} " == *" hdiffpatch "* ]]; then
  if [ -z "$HDIFFZ" ]; then HDIFFZ=$(command -v hdiffz || true); fi
  if [ -z "$HDIFFZ" ]; then
    HDIFFZ="$HDP_DIR/hdiffz"
    if [ ! -x "$HDIFFZ" ] || [ ! -x "$HDP_DIR/hpatchz" ]; then
      # HDiffPatch, zstd/bzip2/zlib from the system (ZSTD=2 BZIP2=2 ZLIB=2), no other plugins
      log "building HDiffPatch $HDP_TAG in $HDP_DIR"
      dev=()
      for h in zstd.h:libzstd-dev bzlib.h:libbz2-dev zlib.h:zlib1g-dev; do
        [ -f "/usr/include/${h%%:*}" ] || dev+=("${h#*:}")
      done
      for c in git:git make:make g++:g++; do command -v "${c%%:*}" >/dev/null || dev+=("${c#*:}"); done
      [ ${#dev[@]} -eq 0 ] || apt_install "${dev[@]}"
      rm -rf "$HDP_DIR"; mkdir -p "$(dirname "$HDP_DIR")"
      git -c advice.detachedHead=false clone -q --depth 1 --branch "$HDP_TAG" "$HDP_GIT" "$HDP_DIR" >&2
      make -C "$HDP_DIR" -j"$(nproc)" LDEF=0 ZLIB=2 LZMA=0 ZSTD=2 BZIP2=2 BSD=0 VCD=0 XXH=0 MD5=0 DIR_DIFF=0 \
        >"$HDP_DIR.build.log" 2>&1 || { tail -20 "$HDP_DIR.build.log" >&2; echo "compare.sh: HDiffPatch build failed" >&2; exit 1; }
    fi
  fi
  HPATCHZ="$(dirname "$HDIFFZ")/hpatchz"
  [ -x "$HPATCHZ" ] || HPATCHZ=$(command -v hpatchz || true)
  [ -x "$HDIFFZ" ] && [ -n "$HPATCHZ" ] || { echo "compare.sh: hdiffz/hpatchz not found (--hdiffz PATH)" >&2; exit 1; }
fi

tool_label() {
  case $1 in
    delta) echo "delta (ours)" ;;
    zstd) echo "zstd -19 --long=31 --patch-from" ;;
    xdelta3) echo "xdelta3 -9 -B<old>" ;;
    bsdiff) echo "bsdiff 4.3" ;;
    hdiffpatch) echo "hdiffz ${HDP_ARGS[*]}" ;;
    rdiff) echo "rdiff -b512 + zstd -19" ;;
  esac
}
zstd_ver() { { zstd -V 2>&1 || true; } | sed -n 1p | grep -oE 'v[0-9.]+' | sed 's/^/zstd /'; }
tool_ident() {
  case $1 in
    delta) if [ -x "$DELTA_BIN" ]; then sha256sum <"$DELTA_BIN" | cut -c1-16; else echo missing; fi ;;
    zstd) zstd_ver ;;
    xdelta3) { xdelta3 -V 2>&1 || true; } | sed -n 1p | cut -d, -f1 ;;
    bsdiff) dpkg-query -W -f '${Version}' bsdiff 2>/dev/null || echo unknown ;;
    hdiffpatch) echo "$({ "$HDIFFZ" -v 2>&1 || true; } | sed -n 1p | sed 's/^HDiffPatch:://') ${HDP_ARGS[*]}" ;;
    rdiff) echo "$({ rdiff --version 2>&1 || true; } | sed -n 1p) + $(zstd_ver)" ;;
  esac
}

# gen/apply commands for TOOL (arrays GEN/APPLY); OLD NEW D OUTF set by caller
set_cmds() {
  local tool=$1 oldsz=$2 b
  case $tool in
    delta)
      GEN=("$DELTA_BIN" gen --force "$OLD" "$NEW" -o "$D")
      APPLY=("$DELTA_BIN" apply "$OLD" "$D" -o "$OUTF") ;;
    zstd)
      GEN=(zstd -q -f -19 --long=31 "--patch-from=$OLD" "$NEW" -o "$D")
      APPLY=(zstd -q -f -d --long=31 "--patch-from=$OLD" "$D" -o "$OUTF") ;;
    xdelta3)
      b=$oldsz; [ "$b" -le $XDELTA_MAX_B ] || b=$XDELTA_MAX_B; [ "$b" -ge 1048576 ] || b=1048576
      GEN=(xdelta3 -9 -e -f -B "$b" -s "$OLD" "$NEW" "$D")
      APPLY=(xdelta3 -d -f -s "$OLD" "$D" "$OUTF") ;;
    bsdiff)
      GEN=(bsdiff "$OLD" "$NEW" "$D")
      APPLY=(bspatch "$OLD" "$OUTF" "$D") ;;
    hdiffpatch)
      GEN=("$HDIFFZ" "${HDP_ARGS[@]}" "$OLD" "$NEW" "$D")
      APPLY=("$HPATCHZ" "$OLD" "$D" "$OUTF") ;;
    rdiff)
      # balena v3-style librsync delta: 512-byte blocks, 32-byte BLAKE2 strong sums,
      # rollsum; literal data is not compressed by librsync, so zstd -19 the delta.
      GEN=(bash -c 'set -o pipefail; rdiff -f -H blake2 -R rollsum -b 512 -S 32 signature "$1" "$3.sig" &&
                    rdiff -f delta "$3.sig" "$2" - | zstd -q -f -19 -o "$3"; rc=$?; rm -f "$3.sig"; exit $rc' \
           rdiff-gen "$OLD" "$NEW" "$D")
      APPLY=(bash -c 'set -o pipefail; zstd -q -d -c "$2" | rdiff -f patch "$1" - "$3"' rdiff-apply "$OLD" "$D" "$OUTF") ;;
  esac
}

# measure NAME CMD... -> sets M_RC M_WALL M_RSS_MIB ; log in $WORK/NAME.log
measure() {
  local name=$1; shift
  local tf="$WORK/$name.time"
  rm -f "$tf"
  M_RC=0
  /usr/bin/time -v -o "$tf" timeout -k 30 "$TIMEOUT" "$@" >"$WORK/$name.log" 2>&1 || M_RC=$?
  M_WALL=$(awk -F': ' '/Elapsed \(wall clock\)/ {
      n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; printf "%.2f", s }' "$tf" 2>/dev/null || true)
  M_RSS_MIB=$(awk -F': ' '/Maximum resident set size/ { printf "%.0f", $2 / 1024 }' "$tf" 2>/dev/null || true)
  [ -n "$M_WALL" ] || M_WALL=NA
  [ -n "$M_RSS_MIB" ] || M_RSS_MIB=NA
}
rc_word() { case $1 in 0) echo ok ;; 124|137) echo TIMEOUT ;; *) echo "FAIL(rc=$1)" ;; esac; }

pair_files() { # pair_files NAME -> sets OLD NEW
  local d="$CACHE/$1"
  OLD="" NEW=""
  for f in "$d"/old.*; do [ -f "$f" ] && OLD=$f; done
  for f in "$d"/new.*; do [ -f "$f" ] && NEW=$f; done
  [ -n "$OLD" ] && [ -n "$NEW" ]
}

# TSV columns
TSV_HDR="pair	tool	delta_bytes	pct_of_new	gen_s	gen_rss_mib	apply_s	apply_rss_mib	exact	status	new_bytes	old_bytes	ident	when"

run_row() { # run_row PAIR TOOL -> writes $ROWS/PAIR.TOOL.tsv
  local pair=$1 tool=$2 row="$ROWS/$1.$2.tsv" key ident oldsz newsz
  oldsz=$(stat -c %s "$OLD") newsz=$(stat -c %s "$NEW")
  ident=$(tool_ident "$tool")
  key="$(stat -c '%s.%Y' "$OLD" "$NEW" | tr '\n' ' ')| $ident | timeout=$TIMEOUT"
  if [ $FRESH = 0 ] && [ -f "$row.key" ] && [ "$(cat "$row.key")" = "$key" ] && [ -f "$row" ]; then
    log "$pair / $tool: cached"
    return 0
  fi
  local dbytes=NA pct=NA gs=NA gr=NA as=NA ar=NA exact=- status
  local when; when=$(date -u +%Y-%m-%dT%H:%MZ)
  D="$WORK/$pair.$tool.delta" OUTF="$WORK/$pair.$tool.out"
  rm -f "$D" "$OUTF"
  if [ "$tool" = delta ] && [ ! -x "$DELTA_BIN" ]; then
    status="no binary"
  elif [ "$tool" = bsdiff ] && { [ "$oldsz" -gt $BSDIFF_MAX ] || [ "$newsz" -gt $BSDIFF_MAX ]; }; then
    status="skipped (>200 MiB)"
  else
    set_cmds "$tool" "$oldsz"
    cat "$OLD" "$NEW" >/dev/null   # warm the page cache for every tool alike
    log "$pair / $tool: gen"
    measure "$pair.$tool.gen" "${GEN[@]}"
    gs=$M_WALL gr=$M_RSS_MIB status="gen $(rc_word $M_RC)"
    if [ $M_RC = 0 ] && [ -f "$D" ]; then
      dbytes=$(stat -c %s "$D")
      pct=$(awk -v d="$dbytes" -v n="$newsz" 'BEGIN { printf "%.3f", 100 * d / n }')
      log "$pair / $tool: apply (delta $dbytes bytes, gen ${gs}s)"
      measure "$pair.$tool.apply" "${APPLY[@]}"
      as=$M_WALL ar=$M_RSS_MIB
      if [ $M_RC = 0 ]; then
        if cmp -s "$NEW" "$OUTF"; then exact=yes; status=ok; else exact=NO; status="output differs"; fi
      else
        status="apply $(rc_word $M_RC)"
      fi
    else
      [ $M_RC = 0 ] && status="gen wrote no delta"
      log "$pair / $tool: $status: $(tail -3 "$WORK/$pair.$tool.gen.log" 2>/dev/null | tr '\n' ' ')"
    fi
    log "$pair / $tool: $status"
  fi
  rm -f "$D" "$OUTF"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
    "$pair" "$tool" "$dbytes" "$pct" "$gs" "$gr" "$as" "$ar" "$exact" "$status" "$newsz" "$oldsz" "$ident" "$when" >"$row"
  printf '%s\n' "$key" >"$row.key"
}

machine_info() {
  local cpu mem
  cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
  mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
  echo "- machine: nproc $(nproc), CPU ${cpu:-unknown}, RAM $mem, $(uname -sr), $(. /etc/os-release; echo "$PRETTY_NAME")"
  echo "- load average at end: $(cut -d' ' -f1-3 /proc/loadavg) (the machine is shared; wall times are indicative)"
}

fmt_bytes() { awk -v b="$1" 'BEGIN { if (b !~ /^[0-9]+$/) { print b; exit }
  if (b >= 1048576) printf "%.2f MiB", b / 1048576; else if (b >= 1024) printf "%.1f KiB", b / 1024; else printf "%d B", b }'; }

write_report() {
  local pair tool row
  # the report covers every pair that has results, not only the ones run now
  local REPORT_PAIRS=()
  for pair in "${KNOWN_PAIRS[@]}"; do
    if compgen -G "$ROWS/$pair.*.tsv" >/dev/null; then REPORT_PAIRS+=("$pair"); fi
  done
  {
    echo "# Delta engine comparison"
    echo
    echo "Generated $(date -u '+%Y-%m-%d %H:%M UTC') by benches/compare.sh (corpus: testdata/corpus.sh)."
    echo
    machine_info
    echo "- timeout per run: ${TIMEOUT}s; runs are sequential; RSS = max resident set of the largest process (GNU time -v)"
    echo
    echo "| pair | old | new | how |"
    echo "|---|---|---|---|"
    for pair in "${REPORT_PAIRS[@]}"; do
      pair_files "$pair" || continue
      echo "| $pair | $(fmt_bytes "$(stat -c %s "$OLD")") | $(fmt_bytes "$(stat -c %s "$NEW")") | $(sed -n 1p "$CACHE/$pair/INFO" | sed 's/^[a-z-]*: //; s/|/\\|/g') |"
    done
    echo
    echo "| pair | tool | delta size (bytes) | % of new | gen wall s | gen peak RSS MiB | apply wall s | apply peak RSS MiB | byte-exact |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---|"
    for pair in "${REPORT_PAIRS[@]}"; do
      for tool in "${ALL_TOOLS[@]}"; do
        row="$ROWS/$pair.$tool.tsv"
        [ -f "$row" ] || continue
        IFS=$'\t' read -r _ _ dbytes pct gs gr as ar exact status _ _ _ _ <"$row"
        local cell_exact=$exact
        [ "$status" = ok ] || cell_exact="$exact ($status)"
        [ "$status" = "skipped (>200 MiB)" ] && cell_exact="skipped (>200 MiB)"
        [ "$status" = "no binary" ] && cell_exact="not run (no binary)"
        printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$pair" "$(tool_label "$tool")" \
          "$dbytes" "$pct" "$gs" "$gr" "$as" "$ar" "$cell_exact"
      done
    done
    echo
    echo "Tool versions (delta: sha256 prefix of the binary):"
    for tool in "${ALL_TOOLS[@]}"; do
      local ids
      ids=$(for pair in "${REPORT_PAIRS[@]}"; do
              if [ -f "$ROWS/$pair.$tool.tsv" ]; then cut -f13 "$ROWS/$pair.$tool.tsv"; fi
            done | sort -u | paste -sd, - | sed 's/,/, /g')
      if [ -n "$ids" ]; then echo "- $(tool_label "$tool"): $ids"; fi
    done
  } >"$OUT"
  {
    echo "$TSV_HDR"
    for pair in "${REPORT_PAIRS[@]}"; do for tool in "${ALL_TOOLS[@]}"; do
      if [ -f "$ROWS/$pair.$tool.tsv" ]; then cat "$ROWS/$pair.$tool.tsv"; fi
    done; done
  } >"$TSV"
}

# ---------------------------------------------------------------- main
if [ $BUILD = 1 ]; then
  missing=()
  for pair in "${PAIRS[@]}"; do [ -f "$CACHE/$pair/INFO" ] || missing+=("$pair"); done
  if [ ${#missing[@]} -gt 0 ]; then
    log "building missing corpus pairs: ${missing[*]}"
    "$ROOT/testdata/corpus.sh" --cache "$CACHE" --only "${missing[@]}"
  fi
fi
for pair in "${PAIRS[@]}"; do
  if ! pair_files "$pair"; then log "$pair: not in $CACHE (run testdata/corpus.sh), skipping"; continue; fi
  for tool in "${TOOLS[@]}"; do
    run_row "$pair" "$tool"
  done
done
write_report
cat "$OUT"
log "table written to $OUT (raw numbers: $TSV)"
