#!/usr/bin/env bash
# Device benchmark for `delta apply` onto a slow block device (issue #20): an SD card or
# eMMC simulated by a loop device throttled with cgroup v1 blk-throttle.
#
# Usage (as root):
#   benches/device/run.sh [bench] [PAIR...]   apply each corpus PAIR (default: os-minor) on
#                                             every profile, zeroed and old-image targets
#   benches/device/run.sh primitives          cost of discard / write-zeroes / dd / read on
#                                             a throttled 512 MiB sd loop device
#   benches/device/run.sh calibrate           check that the throttle holds for O_DIRECT and
#                                             for buffered writes (writeback), dio off and on
#   benches/device/run.sh all [PAIR...]       calibrate, primitives, bench
# A slow-CPU device: DEVBENCH_CPU=4x30 (4 cores at 30%, by CFS quota) with any of these.
#
# Profiles (MB = 10^6 bytes):   sd   = 40 MB/s read, 20 MB/s write, 1500 read IOPS
#                               emmc = 150 MB/s read, 80 MB/s write
# The limits go on the ROOT blkio cgroup (/sys/fs/cgroup/blkio/blkio.throttle.*) for the
# loop device's MAJ:MIN: buffered writes are issued by writeback threads, which cgroup v1
# accounts to the root cgroup, so a limit on a child cgroup would only catch O_DIRECT.
# Loop devices are attached with --direct-io=$DEVBENCH_DIO (default on: no second page cache
# for the backing file, so that a write is finished when the device says so; `calibrate`
# measures both). Backing files live in $DEVBENCH_SCRATCH (default /tmp/devbench), which must
# be on a real disk (not tmpfs) so the backing file itself is not the bottleneck.
#
# Per pair and profile, `bench` measures:
#   targets  zero-sparse  loop over a sparse zero file (truncate) of the new image's size
#            zero-alloc   the same over a fully allocated file (fallocate -l: unwritten extents)
#            old          the same over a full (non-sparse) copy of old.img, padded
#            new          the same over a copy of new.img: an update run again, or onto a
#                         partition laid out like the new image (not in the default set)
#   delta apply OLD D -o /dev/loopN (OLD is a plain, unthrottled file), then `sync`;
#   wall time and peak RSS (/usr/bin/time -v); sectors read/written/discarded on the loop
#   device from /sys/block/loopN/stat (fields 3, 7, 14); the result compared with `cmp`
#   against new.img (through the backing file, which is unthrottled; with dio on it holds
#   exactly what the device holds).
#   reference (on a zero-sparse target): nonzero = only new.img's non-zero 4 KiB blocks,
#   written in runs with os.pwrite then fsync; est = their bytes / the write limit;
#   cp = `cp new.img /dev/loopN && sync`; and on an old-image target: BLKDISCARD every zero
#   run of new.img, then write the non-zero blocks (the cheapest way to get new.img there when
#   discarded ranges read back as zeros, as they do on a loop device).
# Columns of the results table: apply s (delta apply, wall), sync s (a `sync` after it),
# wr/rd/disc MB (device bytes written, read, discarded), nz est s / nz meas s (reference
# non-zero write time, estimated and measured), ratio = apply s / nz meas s, RSS MiB, cmp.
#
# Environment: DEVBENCH_DELTA (binary; default target/release/delta of this checkout, build it
# first with `cargo build --release -p delta-cli`), DEVBENCH_CORPUS (default
# testdata/cache/corpus of this checkout, else of the main worktree), DEVBENCH_SCRATCH,
# DEVBENCH_APPLY_ARGS (extra `delta apply` options), DEVBENCH_PROFILES (default "sd emmc"), DEVBENCH_TARGETS (default "zero-sparse zero-alloc
# old"), DEVBENCH_DIO (on|off), DEVBENCH_RESULTS (markdown results, default
# $DEVBENCH_SCRATCH/results.md, appended to), DEVBENCH_DROP_CACHES (1 = drop the page cache
# before each timed step; default 1).
# Everything set up is undone at exit, also on failure: throttle limits removed, loop devices
# detached, backing files deleted (the generated deltas stay in the scratch folder).
set -euo pipefail

die() { echo "run.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (loop devices, blk-throttle, drop_caches)"
for tool in losetup blkdiscard fallocate python3 /usr/bin/time cmp dd sync awk truncate; do
  command -v "$tool" >/dev/null || die "missing tool: $tool"
done
BLKIO=/sys/fs/cgroup/blkio
[ -w "$BLKIO/blkio.throttle.write_bps_device" ] || die "no cgroup v1 blkio at $BLKIO"

repo=$(cd "$(dirname "$0")/../.." && pwd)
DELTA=${DEVBENCH_DELTA:-$repo/target/release/delta}
if [ -z "${DEVBENCH_CORPUS:-}" ]; then
  DEVBENCH_CORPUS=$repo/testdata/cache/corpus
  if [ ! -d "$DEVBENCH_CORPUS" ]; then
    main=$(cd "$repo" && cd "$(git rev-parse --git-common-dir)/.." && pwd) || true
    DEVBENCH_CORPUS=$main/testdata/cache/corpus
  fi
fi
SCRATCH=${DEVBENCH_SCRATCH:-/tmp/devbench}
PROFILES=${DEVBENCH_PROFILES:-sd emmc}
TARGETS=${DEVBENCH_TARGETS:-zero-sparse zero-alloc old}
# Extra options of `delta apply`, e.g. --compare-zero-runs (what an SD card without safe
# zeroing gets).
DEVBENCH_APPLY_ARGS=${DEVBENCH_APPLY_ARGS:-}
DIO=${DEVBENCH_DIO:-on}
# A slow-CPU device: N cores at PCT% of their speed each (e.g. 4x30), through the cgroup v1
# cpu controller's CFS quota (N x PCT% of one core in all; the applier's default --threads
# follows the quota). Empty: the machine's cores as they are.
CPU=${DEVBENCH_CPU:-}
CPU_CG=/sys/fs/cgroup/cpu/devbench-$$
RESULTS=${DEVBENCH_RESULTS:-$SCRATCH/results.md}
DROP=${DEVBENCH_DROP_CACHES:-1}
mkdir -p "$SCRATCH"
work=$(mktemp -d "$SCRATCH/run.XXXXXX")
fstype=$(df --output=fstype "$SCRATCH" | tail -1)
[ "$fstype" != tmpfs ] || die "$SCRATCH is on tmpfs; set DEVBENCH_SCRATCH to a folder on a disk"

# ---------------------------------------------------------------- setup and cleanup
LOOPS=()       # loop devices attached by this script
LIMITED=()     # MAJ:MIN with limits set by this script
cleanup() {
  local rc=$?
  set +e
  for mm in "${LIMITED[@]}"; do
    for f in read_bps_device write_bps_device read_iops_device write_iops_device; do
      echo "$mm 0" >"$BLKIO/blkio.throttle.$f" 2>/dev/null
    done
  done
  for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null; done
  [ -d "$CPU_CG" ] && rmdir "$CPU_CG" 2>/dev/null
  rm -rf "$work"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# profile NAME -> read_bps write_bps read_iops (0 = unlimited)
profile() {
  case $1 in
    sd) echo 40000000 20000000 1500 ;;
    emmc) echo 150000000 80000000 0 ;;
    *) die "unknown profile $1" ;;
  esac
}
throttle() { # DEV PROFILE|none
  local mm; mm=$(cat "/sys/block/${1#/dev/}/dev")
  local r=0 w=0 i=0
  [ "$2" = none ] || read -r r w i < <(profile "$2")
  echo "$mm $r" >"$BLKIO/blkio.throttle.read_bps_device"
  echo "$mm $w" >"$BLKIO/blkio.throttle.write_bps_device"
  echo "$mm $i" >"$BLKIO/blkio.throttle.read_iops_device"
  [[ " ${LIMITED[*]} " == *" $mm "* ]] || LIMITED+=("$mm")
}
detach() { # DEV
  losetup -d "$1"
  local keep=() l
  for l in "${LOOPS[@]}"; do [ "$l" = "$1" ] || keep+=("$l"); done
  LOOPS=("${keep[@]}")
}
attach_to() { # VAR FILE [DIO]
  local l; l=$(losetup -f --show --direct-io="${3:-$DIO}" "$2")
  LOOPS+=("$l")
  printf -v "$1" %s "$l"
}
stat_sectors() { awk '{print $3, $7, $14}' "/sys/block/${1#/dev/}/stat"; } # read write discard
drop_caches() { [ "$DROP" != 1 ] || { sync; echo 3 >/proc/sys/vm/drop_caches; }; }
now() { date +%s.%N; }

# Runs "$@" inside the slow-CPU cgroup when DEVBENCH_CPU is set.
slow_cpu() {
  if [ -z "$CPU" ]; then "$@"; return; fi
  if [ ! -d "$CPU_CG" ]; then
    [[ $CPU =~ ^([0-9]+)x([0-9]+)$ ]] || die "DEVBENCH_CPU=$CPU: expected NxPCT, e.g. 4x30"
    mkdir "$CPU_CG" || die "no cgroup v1 cpu controller at /sys/fs/cgroup/cpu"
    echo 100000 >"$CPU_CG/cpu.cfs_period_us"
    echo $((BASH_REMATCH[1] * BASH_REMATCH[2] * 1000)) >"$CPU_CG/cpu.cfs_quota_us"
  fi
  sh -c 'echo $$ >"$0/tasks" && exec "$@"' "$CPU_CG" "$@"
}
mb() { awk -v s="$1" 'BEGIN{printf "%.1f", s*512/1e6}'; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", b-a}'; }
round4k() { echo $(( ($1 + 4095) / 4096 * 4096 )); }
# measure DEV CMD... : runs CMD, sets M_T (s) M_RD M_WR M_DISC (sectors)
measure() {
  local dev=$1; shift
  local a b t0 t1
  read -r -a a < <(stat_sectors "$dev")
  t0=$(now); "$@"; t1=$(now)
  read -r -a b < <(stat_sectors "$dev")
  M_T=$(sub "$t0" "$t1")
  M_RD=$((b[0] - a[0])); M_WR=$((b[1] - a[1])); M_DISC=$((b[2] - a[2]))
}
md() { echo "$*" | tee -a "$RESULTS"; }

# Python helper: non-zero 4 KiB blocks of an image (count) and writing only them.
NZ_PY='
import os, sys, time, struct, fcntl
# count IMG [OLD]        -> non-zero 4 KiB blocks of IMG: count bytes runs [blocks differing from OLD, bytes]
# write IMG DEV [discard] -> write only the non-zero blocks (runs of up to 1 MiB), fsync; with
#                           discard, first BLKDISCARD every zero run; prints the seconds taken
mode, img = sys.argv[1], sys.argv[2]
B = 4096
runs, cur, n = [], None, 0
size = os.path.getsize(img)
with open(img, "rb") as f:
    off = 0
    zero = bytes(1 << 20)
    while True:
        chunk = f.read(1 << 20)
        if not chunk:
            break
        if chunk != zero[: len(chunk)]:
            for i in range(0, len(chunk), B):
                blk = chunk[i : i + B]
                if blk.count(0) != len(blk):
                    n += 1
                    o = off + i
                    if cur and cur[0] + cur[1] == o:
                        cur[1] += len(blk)
                    else:
                        cur = [o, len(blk)]
                        runs.append(cur)
        off += len(chunk)
if mode == "count":
    out = [n, n * B, len(runs)]
    if len(sys.argv) > 3:
        d = 0
        with open(img, "rb") as f, open(sys.argv[3], "rb") as g:
            while True:
                a, b = f.read(1 << 20), g.read(1 << 20)
                if not a:
                    break
                if a != b[: len(a)]:
                    d += sum(a[i : i + B] != b[i : i + B] for i in range(0, len(a), B))
        out += [d, d * B]
    print(*out)
    sys.exit()
dev = sys.argv[3]
discard = len(sys.argv) > 4 and sys.argv[4] == "discard"
src = os.open(img, os.O_RDONLY)
t0 = time.monotonic()
fd = os.open(dev, os.O_WRONLY)
if discard:
    BLKDISCARD = 0x1277
    end = (size + B - 1) // B * B
    at = 0
    for o, l in runs + [[end, 0]]:
        if o > at:
            fcntl.ioctl(fd, BLKDISCARD, struct.pack("QQ", at, o - at))
        at = o + l
for o, l in runs:
    while l:
        k = min(l, 1 << 20)
        os.pwrite(fd, os.pread(src, k, o), o)
        o += k
        l -= k
os.fsync(fd)
os.close(fd)
print("%.2f" % (time.monotonic() - t0))
'

# ---------------------------------------------------------------- calibrate
calibrate() {
  echo "== calibrate: 100 MiB of zeros onto a throttled sd loop device (20 MB/s -> ~5.2 s)"
  local f=$work/cal.img dev dio
  fallocate -l 512M "$f"
  md ""
  md "### Throttle calibration (sd profile, 100 MiB dd, kernel $(uname -r))"
  md ""
  md "| loop dio | dd oflag=direct s | dd buffered + sync s | 2000 random 4 KiB O_DIRECT writes + fsync s | dd iflag=direct 200 MiB read s |"
  md "|---|---|---|---|---|"
  for dio in off on; do
    attach_to dev "$f" "$dio"
    throttle "$dev" sd
    local t1 t2 t3 t4 s
    s=$(now); dd if=/dev/zero of="$dev" bs=1M count=100 oflag=direct status=none; t1=$(sub "$s" "$(now)")
    s=$(now); dd if=/dev/zero of="$dev" bs=1M count=100 status=none; sync; t2=$(sub "$s" "$(now)")
    s=$(now); python3 - "$dev" <<'PY'
import os, sys, random, mmap
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_DIRECT)
b = mmap.mmap(-1, 4096); b.write(b"x" * 4096)
r = random.Random(1)
for _ in range(2000):
    os.pwritev(fd, [b], r.randrange(0, 512 * 256) * 4096)
os.fsync(fd)
PY
    t3=$(sub "$s" "$(now)")
    drop_caches
    s=$(now); dd if="$dev" of=/dev/null bs=1M count=200 iflag=direct status=none; t4=$(sub "$s" "$(now)")
    md "| $dio | $t1 | $t2 | $t3 | $t4 |"
    throttle "$dev" none
    detach "$dev"
  done
  rm -f "$f"
}

# ---------------------------------------------------------------- primitives
primitives() {
  local size=$((512 << 20)) f=$work/prim.img dev
  fallocate -l $size "$f"
  attach_to dev "$f"
  local q=/sys/block/${dev#/dev/}/queue
  md ""
  md "### Primitive costs: 512 MiB loop device (dio $DIO), sd profile (20 MB/s write, 40 MB/s read, 1500 read IOPS), kernel $(uname -r)"
  md ""
  md "queue: discard_max_bytes=$(cat $q/discard_max_bytes) write_zeroes_max_bytes=$(cat $q/write_zeroes_max_bytes) discard_granularity=$(cat $q/discard_granularity) max_sectors_kb=$(cat $q/max_sectors_kb)"
  md ""
  md "| operation | s | written MB | read MB | discarded MB | reads back as zeros |"
  md "|---|---|---|---|---|---|"
  fill() { # non-zero content everywhere, unthrottled
    throttle "$dev" none
    python3 - "$dev" $size <<'PY'
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
blk = (b"\xa5" * 4095 + b"\n") * 256
for o in range(0, int(sys.argv[2]), len(blk)):
    os.pwrite(fd, blk, o)
os.fsync(fd)
PY
    sync; echo 3 >/proc/sys/vm/drop_caches
    throttle "$dev" sd
    sleep 1 # let the throttle slice restart
  }
  zeros() { # whole device, through the backing file (unthrottled) and O_DIRECT samples of the device
    python3 - "$f" "$dev" <<'PY'
import os, sys, mmap
back, dev = sys.argv[1], sys.argv[2]
ok = True
with open(back, "rb") as f:
    z = bytes(1 << 20)
    while True:
        c = f.read(1 << 20)
        if not c: break
        if c != z[: len(c)]: ok = False; break
fd = os.open(dev, os.O_RDONLY | os.O_DIRECT)
size = os.lseek(fd, 0, os.SEEK_END)
b = mmap.mmap(-1, 1 << 20)
for o in (0, size // 2, size - (1 << 20)):
    os.preadv(fd, [b], o)
    if b[:] != bytes(1 << 20): ok = False
print("yes" if ok else "NO")
PY
  }
  prim() { # LABEL CMD...
    local label=$1; shift
    fill
    measure "$dev" "$@"
    local z; z=$(zeros)
    md "| $label | $M_T | $(mb $M_WR) | $(mb $M_RD) | $(mb $M_DISC) | $z |"
  }
  prim "blkdiscard (BLKDISCARD, whole device)" blkdiscard "$dev"
  prim "blkdiscard -p 1MiB (512 discards of 1 MiB)" blkdiscard -p 1M "$dev"
  prim "blkdiscard -z (BLKZEROOUT, whole device)" blkdiscard -z "$dev"
  prim "fallocate --punch-hole --keep-size (whole device)" fallocate --punch-hole --keep-size -o 0 -l $size "$dev"
  prim "fallocate --zero-range (whole device)" fallocate --zero-range -o 0 -l $size "$dev"
  prim "dd if=/dev/zero bs=1M oflag=direct (whole device)" dd if=/dev/zero of="$dev" bs=1M count=$((size >> 20)) oflag=direct status=none
  prim "dd if=/dev/zero bs=1M buffered, then sync" sh -c "dd if=/dev/zero of=$dev bs=1M count=$((size >> 20)) status=none && sync"
  drop_caches
  measure "$dev" dd if="$dev" of=/dev/null bs=1M iflag=direct status=none
  md "| sequential read, dd bs=1M iflag=direct (whole device) | $M_T | $(mb $M_WR) | $(mb $M_RD) | $(mb $M_DISC) | - |"
  drop_caches
  measure "$dev" dd if="$dev" of=/dev/null bs=1M status=none
  md "| sequential read, dd bs=1M buffered (whole device) | $M_T | $(mb $M_WR) | $(mb $M_RD) | $(mb $M_DISC) | - |"
  measure "$dev" dd if="$dev" of=/dev/null bs=4k count=4096 iflag=direct status=none
  md "| read 16 MiB in 4 KiB O_DIRECT reads (IOPS bound) | $M_T | $(mb $M_WR) | $(mb $M_RD) | $(mb $M_DISC) | - |"
  throttle "$dev" none
  detach "$dev"
  rm -f "$f"
}

# ---------------------------------------------------------------- bench
old_target() { # OLD FILE SIZE: a full (non-sparse) copy of OLD, padded to SIZE and to 4 KiB
  cp --sparse=never "$1" "$2"
  [ "$(stat -c %s "$2")" -ge "$3" ] || truncate -s "$3" "$2"
  truncate -s "$(round4k "$(stat -c %s "$2")")" "$2"
}
bench_pair() { # PAIR
  local pair=$1 dir=$DEVBENCH_CORPUS/$1
  local old=$dir/old.img new=$dir/new.img
  [ -f "$old" ] && [ -f "$new" ] || die "no $old / $new"
  local d=$SCRATCH/$pair.delta
  echo "== $pair: delta gen"
  "$DELTA" gen --force "$old" "$new" -o "$d" >"$work/gen.log" 2>&1 || { cat "$work/gen.log"; die "delta gen failed"; }
  local nsize osize size
  nsize=$(stat -c %s "$new"); osize=$(stat -c %s "$old")
  size=$(round4k "$nsize")
  local nz nzbytes nzruns ndiff ndiffbytes
  read -r nz nzbytes nzruns ndiff ndiffbytes < <(python3 -c "$NZ_PY" count "$new" "$old")
  echo "   new.img $nsize bytes, $nz non-zero 4 KiB blocks ($nzbytes bytes, $nzruns runs), $ndiff blocks differ from old.img ($ndiffbytes bytes); delta $(stat -c %s "$d") bytes"
  local profile_name rbps wbps riops
  for profile_name in $PROFILES; do
    read -r rbps wbps riops < <(profile "$profile_name")
    local est; est=$(awk -v b="$nzbytes" -v w="$wbps" 'BEGIN{printf "%.2f", b/w}')
    # reference: non-zero blocks and cp, on a sparse zero target
    local f=$work/ref.img dev nzt cpt
    truncate -s "$size" "$f"
    attach_to dev "$f"; throttle "$dev" "$profile_name"
    drop_caches
    # python times itself: from opening the device (its counting pass over new.img is
    # done) to the end of the fsync
    measure "$dev" sh -c 'python3 -c "$1" write "$2" "$3" >"$4"' nz "$NZ_PY" "$new" "$dev" "$work/nz.t"
    nzt=$(cat "$work/nz.t")
    local nzwr=$M_WR
    cmp -n "$nsize" "$new" "$f" >/dev/null || die "reference non-zero write: result differs from new.img"
    throttle "$dev" none; detach "$dev"; rm -f "$f"
    truncate -s "$size" "$f"
    attach_to dev "$f"; throttle "$dev" "$profile_name"
    drop_caches
    measure "$dev" sh -c "cp '$new' '$dev' && sync"
    cpt=$M_T
    local cpwr=$M_WR
    throttle "$dev" none; detach "$dev"; rm -f "$f"
    # reference on an old-image target: BLKDISCARD the new image's zero runs, write the rest
    old_target "$old" "$f" "$size"
    attach_to dev "$f"; throttle "$dev" "$profile_name"
    drop_caches
    measure "$dev" sh -c 'python3 -c "$1" write "$2" "$3" discard >"$4"' nz "$NZ_PY" "$new" "$dev" "$work/nz.t"
    local dst; dst=$(cat "$work/nz.t")
    local dwr=$M_WR ddisc=$M_DISC dok=ok
    cmp -n "$nsize" "$new" "$f" >/dev/null || dok=DIFFERS
    throttle "$dev" none; detach "$dev"; rm -f "$f"
    echo "   $profile_name: non-zero blocks est ${est}s measured ${nzt}s ($(mb $nzwr) MB written); cp+sync ${cpt}s ($(mb $cpwr) MB); old target, discard zero runs + write non-zero ${dst}s ($(mb $dwr) MB written, $(mb $ddisc) MB discarded, $dok)"
    REFS+=("| $pair | $profile_name | $nz | $(awk -v b="$nzbytes" 'BEGIN{printf "%.1f", b/1e6}') | $(awk -v b="$ndiffbytes" 'BEGIN{printf "%.1f", b/1e6}') | $est | $nzt | $(mb $nzwr) | $cpt | $(mb $cpwr) | $dst | $(mb $dwr) | $(mb $ddisc) | $dok |")

    local target
    for target in $TARGETS; do
      f=$work/target.img
      rm -f "$f"
      case $target in
        zero-sparse) truncate -s "$size" "$f" ;;
        zero-alloc) fallocate -l "$size" "$f" ;;
        old) old_target "$old" "$f" "$size" ;;
        new) old_target "$new" "$f" "$size" ;;
        *) die "unknown target $target" ;;
      esac
      attach_to dev "$f"; throttle "$dev" "$profile_name"
      local s=$work/state; rm -rf "$s"; mkdir -p "$s"
      drop_caches
      sleep 1
      local a b t0 t1 t2 rc=0
      read -r -a a < <(stat_sectors "$dev")
      t0=$(now)
      slow_cpu /usr/bin/time -v -o "$work/time.txt" "$DELTA" apply "$old" "$d" -o "$dev" \
        --no-log --progress none --state-dir "$s" --instance-lock "$s/lock" --lock-root "$s/nolocks" \
        --supervisor-config "$s/nocfg" --keyring "$s/nokeys" $DEVBENCH_APPLY_ARGS >"$work/apply.log" 2>&1 || rc=$?
      t1=$(now)
      sync
      t2=$(now)
      read -r -a b < <(stat_sectors "$dev")
      if [ $rc != 0 ]; then cat "$work/apply.log"; die "delta apply failed ($rc) on $pair $profile_name $target"; fi
      local rss apply_t sync_t ok ratio
      rss=$(awk -F': ' '/Maximum resident set size/{printf "%.1f", $2/1024}' "$work/time.txt")
      apply_t=$(sub "$t0" "$t1"); sync_t=$(sub "$t1" "$t2")
      if cmp -n "$nsize" "$new" "$f" >/dev/null; then ok=ok; else ok=DIFFERS; fi
      ratio=$(awk -v a="$apply_t" -v n="$nzt" 'BEGIN{printf "%.2f", a/n}')
      local row="| $pair | $profile_name | $target | $apply_t | $sync_t | $(mb $((b[1]-a[1]))) | $(mb $((b[0]-a[0]))) | $(mb $((b[2]-a[2]))) | $est | $nzt | $ratio | $rss | $ok |"
      echo "$row"
      ROWS+=("$row")
      throttle "$dev" none; detach "$dev"; rm -f "$f"
    done
  done
}

bench() {
  [ -x "$DELTA" ] || die "no binary $DELTA (cargo build --release -p delta-cli)"
  local pairs=("$@"); [ ${#pairs[@]} -gt 0 ] || pairs=(os-minor)
  ROWS=(); REFS=()
  local p
  for p in "${pairs[@]}"; do bench_pair "$p"; done
  local rev; rev=$(cd "$repo" && git describe --always --dirty 2>/dev/null || echo "?")
  md ""
  md "### delta apply onto throttled loop devices ($DELTA @ $rev, loop dio $DIO, cpu ${CPU:-all}, kernel $(uname -r), $(date -u +%FT%TZ))"
  md ""
  md "| pair | profile | target | apply s | sync s | wr MB | rd MB | disc MB | nz est s | nz meas s | ratio | RSS MiB | cmp |"
  md "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  for p in "${ROWS[@]}"; do md "$p"; done
  md ""
  md "Reference writes (nz and cp onto a zero-sparse target; discard+nz onto an old-image target):"
  md ""
  md "| pair | profile | non-zero 4 KiB blocks | non-zero MB | MB differing from old | nz est s | nz meas s | nz wr MB | cp+sync s | cp wr MB | old target: discard+nz s | wr MB | disc MB | cmp |"
  md "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  for p in "${REFS[@]}"; do md "$p"; done
}

mode=${1:-bench}
case $mode in
  bench) shift || true; bench "$@" ;;
  primitives) primitives ;;
  calibrate) calibrate ;;
  all) shift; calibrate; primitives; bench "$@" ;;
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' ;;
  *) bench "$@" ;;
esac
