#!/usr/bin/env bash
# Builds $M/RESULTS.md from $M/work/*.time etc. (called by run.sh after each pair)
M=${M:-/tmp/measure}; W=$M/work; DELTA=${DELTA:-target/release/delta}
wall() { [ -f $W/$1.time ] && awk -F': ' '/Elapsed \(wall/ { n=split($2,p,":"); s=0; for(i=1;i<=n;i++) s=s*60+p[i]; printf "%.2f", s }' $W/$1.time || echo NA; }
rss() { [ -f $W/$1.time ] && awk -F': ' '/Maximum resident/ { printf "%.0f", $2/1024 }' $W/$1.time || echo NA; }
cpu() { [ -f $W/$1.time ] && awk -F': ' '/User time/ {u=$2} /System time/ {s=$2} END { printf "%.1f", u+s }' $W/$1.time || echo NA; }
rc() { [ -f $W/$1.rc ] && cat $W/$1.rc || echo NA; }
sz() { [ -f $1 ] && stat -c %s $1 || echo NA; }
ex() { [ -f $W/$1.exact ] && cat $W/$1.exact || echo NA; }
mean() { awk -v a="$1" -v b="$2" 'BEGIN { if (b=="" ) { print a; exit } if (a=="NA"||b=="NA") { print "NA"; exit } printf "%.2f", (a+b)/2 }'; }
maxv() { awk -v a="$1" -v b="$2" 'BEGIN { if (b=="") { print a; exit } if (a=="NA"||b=="NA") { print "NA"; exit } print (a+0>b+0)?a:b }'; }
PAIRS=(binary os-minor os-major alt-minor alt-major sparse-shift random)
{
echo "# delta-528a7c5 vs HDiffPatch v4.12.0 (hdiffz -m-6 -SD -c-zstd-21-24)"
echo
echo "Generated $(date -u '+%Y-%m-%d %H:%M UTC') by benches/content/run.sh (+ summarize.sh). Machine: nproc $(nproc), $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), $(awk '/^MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo); shared."
echo
echo "Gen s / gen RSS: >100 MB pairs = mean (median of 2) wall and max RSS over runs A B A B; binary = one run. Apply: one run. RSS = GNU time -v Maximum resident set size."
echo
echo "| pair | ours bytes | ours --no-deflate bytes | hdiffz bytes | ours/hdiffz | ours gen s | hdiffz gen s | ours gen RSS MiB | hdiffz gen RSS MiB | ours apply s | ours apply RSS MiB | hdiffz apply RSS MiB |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for p in "${PAIRS[@]}"; do
  [ -f $W/$p.ours.gen1.time ] || continue
  o=$(sz $W/$p.ours.d1) n=$(sz $W/$p.nodefl.d) h=$(sz $W/$p.hdz.d1)
  ratio=$(awk -v a=$o -v b=$h 'BEGIN { if (a=="NA"||b=="NA") print "NA"; else printf "%.3f", a/b }')
  og2=""; hg2=""; or2=""; hr2=""
  if [ -f $W/$p.ours.gen2.time ]; then og2=$(wall $p.ours.gen2); or2=$(rss $p.ours.gen2); fi
  if [ -f $W/$p.hdz.gen2.time ]; then hg2=$(wall $p.hdz.gen2); hr2=$(rss $p.hdz.gen2); fi
  printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' $p $o $n $h $ratio \
    $(mean $(wall $p.ours.gen1) "$og2") $(mean $(wall $p.hdz.gen1) "$hg2") \
    $(maxv $(rss $p.ours.gen1) "$or2") $(maxv $(rss $p.hdz.gen1) "$hr2") \
    $(wall $p.ours.apply) $(rss $p.ours.apply) $(rss $p.hdz.apply)
done
echo
echo "## Checks and raw runs"
echo
echo "| pair | ours apply exact | --no-deflate apply exact | hdiffz apply exact | hpatchz apply s | ours gen runs: wall s / user+sys s (RSS MiB) | hdiffz gen runs: wall s / user+sys s (RSS MiB) | --no-deflate gen s (RSS MiB) | exit codes (ours gen, hdz gen, nodefl gen, ours/hdz/nodefl apply) |"
echo "|---|---|---|---|---:|---|---|---|---|"
for p in "${PAIRS[@]}"; do
  [ -f $W/$p.ours.gen1.time ] || continue
  oruns=""; hruns=""; rcs=""
  for r in 1 2; do
    [ -f $W/$p.ours.gen$r.time ] && oruns+="$(wall $p.ours.gen$r) / cpu $(cpu $p.ours.gen$r) ($(rss $p.ours.gen$r)); "
    [ -f $W/$p.hdz.gen$r.time ] && hruns+="$(wall $p.hdz.gen$r) / cpu $(cpu $p.hdz.gen$r) ($(rss $p.hdz.gen$r)); "
  done
  for l in ours.gen1 ours.gen2 hdz.gen1 hdz.gen2 nodefl.gen ours.apply hdz.apply nodefl.apply; do [ -f $W/$p.$l.rc ] && rcs+="$(rc $p.$l) "; done
  printf '| %s | %s | %s | %s | %s | %s| %s| %s (%s) | %s|\n' $p $(ex $p.ours.apply) $(ex $p.nodefl.apply) $(ex $p.hdz.apply) $(wall $p.hdz.apply) \
    "$oruns" "$hruns" $(wall $p.nodefl.gen) $(rss $p.nodefl.gen) "$rcs"
done
echo
echo "## \`content:\` line printed by \`delta gen\` (default run 1, and --no-deflate)"
echo
for p in "${PAIRS[@]}"; do
  [ -f $W/$p.ours.gen1.log ] || continue
  echo "- $p (default): \`$(grep -m1 'content:' $W/$p.ours.gen1.log | sed 's/^[[:space:]]*//')\`"
  [ -f $W/$p.nodefl.gen.log ] && { c=$(grep -m1 "content:" $W/$p.nodefl.gen.log | sed "s/^[[:space:]]*//"); echo "- $p (--no-deflate): ${c:+\`$c\`}${c:-(no content: line printed)}"; }
done
echo
echo "## Commands (see benches/content/run.sh)"
echo
echo '```'
echo "ours gen:    /usr/bin/time -v timeout -k 30 1200 $DELTA gen OLD NEW -o D"
echo "ours gen nd: /usr/bin/time -v timeout -k 30 1200 $DELTA gen --no-deflate OLD NEW -o D"
echo "ours apply:  /usr/bin/time -v timeout -k 30 1200 $DELTA apply --no-log --progress none --state-dir $M/st --instance-lock $M/lk --lock-root $M/nolocks --supervisor-config $M/nocfg --keyring $M/nokeys OLD D -o OUT"
echo "hdiffz:      /usr/bin/time -v timeout -k 30 1200 /tmp/helper-hdiff/HDiffPatch/hdiffz -m-6 -SD -c-zstd-21-24 OLD NEW D"
echo "hpatchz:     /usr/bin/time -v timeout -k 30 1200 /tmp/helper-hdiff/HDiffPatch/hpatchz OLD D OUT"
echo "check:       cmp NEW OUT"
echo '```'
echo
if [ -f $M/NOTES.md ]; then cat $M/NOTES.md; fi
echo
echo "## Run log"
echo
echo '```'
cat $M/run.log 2>/dev/null
echo '```'
} >$M/RESULTS.md
