#!/usr/bin/env bash
# Ours against HDiffPatch v4.12.0 on the corpus pairs (README, "Content-aware deltas").
#   M=OUTDIR DELTA=target/release/delta HDIFFZ=... HPATCHZ=... benches/content/run.sh [PAIR...]
#   then benches/content/summarize.sh (reads $M) writes $M/RESULTS.md. Default: all pairs.
# Mirrors benches/compare.sh: /usr/bin/time -v under `timeout -k 30 1200`, hdiffz -m-6 -SD -c-zstd-21-24
# (no -p flag, i.e. hdiffz's default threads), `hpatchz OLD D OUT`, `delta gen OLD NEW -o D` (default threads),
# page cache warmed with cat before each gen; outputs checked with cmp.
set -u
M=${M:-/tmp/measure}
DELTA=${DELTA:-target/release/delta}
HDIFFZ=${HDIFFZ:-hdiffz}
HPATCHZ=${HPATCHZ:-hpatchz}
export M DELTA
HDP_ARGS=(-m-6 -SD -c-zstd-21-24)
CORPUS=${CORPUS:-testdata/cache/corpus}
# our applier's side effects (log, journal, locks, keyring) kept inside the scratch folder
APPLY_ISO=(--no-log --progress none --state-dir $M/st --instance-lock $M/lk --lock-root $M/nolocks
           --supervisor-config $M/nocfg --keyring $M/nokeys)
TIMEOUT=1200
W=$M/work
mkdir -p $W $M/st
PAIRS=("$@"); [ ${#PAIRS[@]} -gt 0 ] || PAIRS=(binary os-minor os-major alt-minor alt-major sparse-shift random)

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" | tee -a $M/run.log >&2; }
# measure LABEL CMD... : writes $W/LABEL.time (GNU time -v), $W/LABEL.log (stdout+stderr), $W/LABEL.rc
measure() {
  local lab=$1; shift
  /usr/bin/time -v -o $W/$lab.time timeout -k 30 $TIMEOUT "$@" >$W/$lab.log 2>&1
  local rc=$?; echo $rc >$W/$lab.rc
  log "$lab rc=$rc wall=$(awk -F': ' '/Elapsed \(wall/ {print $2}' $W/$lab.time) rss_kb=$(awk -F': ' '/Maximum resident/ {print $2}' $W/$lab.time) load=$(cut -d' ' -f1-3 /proc/loadavg)"
}
warm() { cat "$OLD" "$NEW" >/dev/null; }
check() { # check LABEL OUTFILE
  if cmp -s "$NEW" "$2"; then echo yes >$W/$1.exact; else echo NO >$W/$1.exact; fi
  log "$1 exact=$(cat $W/$1.exact)"; rm -f "$2"
}

for p in "${PAIRS[@]}"; do
  d=$CORPUS/$p
  if [ $p = binary ]; then OLD=$d/old.bin NEW=$d/new.bin; runs=1; else OLD=$d/old.img NEW=$d/new.img; runs=2; fi
  log "== $p"
  warm
  # generation: A B A B (ours default, hdiffz) for >100 MB pairs, A B for binary
  for r in $(seq 1 $runs); do
    rm -f $W/$p.ours.d$r; warm
    measure $p.ours.gen$r "$DELTA" gen --force "$OLD" "$NEW" -o $W/$p.ours.d$r
    rm -f $W/$p.hdz.d$r; warm
    measure $p.hdz.gen$r "$HDIFFZ" "${HDP_ARGS[@]}" "$OLD" "$NEW" $W/$p.hdz.d$r
  done
  rm -f $W/$p.nodefl.d; warm
  measure $p.nodefl.gen "$DELTA" gen --force --no-deflate "$OLD" "$NEW" -o $W/$p.nodefl.d
  # sizes must be deterministic across the repeated runs
  if [ $runs = 2 ]; then
    cmp -s $W/$p.ours.d1 $W/$p.ours.d2 && log "$p ours d1==d2" || log "$p ours d1!=d2 (sizes $(stat -c %s $W/$p.ours.d1 $W/$p.ours.d2 | paste -sd' '))"
    cmp -s $W/$p.hdz.d1 $W/$p.hdz.d2 && log "$p hdz d1==d2" || log "$p hdz d1!=d2 (sizes $(stat -c %s $W/$p.hdz.d1 $W/$p.hdz.d2 | paste -sd' '))"
  fi
  # apply (one run each), byte-exact check
  warm
  rm -f $W/$p.ours.out $W/$p.ours.out.partial
  measure $p.ours.apply "$DELTA" apply "${APPLY_ISO[@]}" "$OLD" $W/$p.ours.d1 -o $W/$p.ours.out
  check $p.ours.apply $W/$p.ours.out
  rm -f $W/$p.hdz.out
  measure $p.hdz.apply "$HPATCHZ" "$OLD" $W/$p.hdz.d1 $W/$p.hdz.out
  check $p.hdz.apply $W/$p.hdz.out
  rm -f $W/$p.nodefl.out $W/$p.nodefl.out.partial
  measure $p.nodefl.apply "$DELTA" apply "${APPLY_ISO[@]}" "$OLD" $W/$p.nodefl.d -o $W/$p.nodefl.out
  check $p.nodefl.apply $W/$p.nodefl.out
  "$(dirname "$0")/summarize.sh"
done
