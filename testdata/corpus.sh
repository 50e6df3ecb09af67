#!/usr/bin/env bash
# Build the delta-engine benchmark corpus (see benches/compare.sh).
#
#   testdata/corpus.sh [--cache DIR] [--only NAME...] [--list]
#   (--list prints the default pairs, then the held-out ones marked "(--only)")
#
# Each pair lands in DIR/NAME/{old,new}.img (binary: old.bin/new.bin) with an INFO
# file describing how it was made. Pairs already built (DIR/NAME/INFO present) are
# skipped, so the script is idempotent and can be re-run after an interruption.
# Default DIR: testdata/cache/corpus (git-ignored).
#
# Pairs:
#   os-minor      640 MiB ext4 images: Debian minbase of the host suite (old) vs the
#                 same + 14 packages, pending point/security updates and config edits.
#   os-major      640 MiB ext4 images: os-minor's new rootfs (old) vs the next suite's
#                 minbase with the same packages and edits (falls back, see INFO).
#   binary        one real stripped executable/library from two adjacent versions of a
#                 Debian package (mariadbd by default).
#   sparse-shift  1 GiB, mostly zeros, 100 MiB mixed text/binary moved by 1237 bytes,
#                 plus 6 small edits.
#   random        256 MiB seeded random; new = 1 MiB inserted at an unaligned offset and
#                 200 scattered 100-byte overwrites.
#
# Held-out pairs (built only when named with --only; not in the default set, so that
# results can be checked on data nothing was tuned on):
#   alt-minor     640 MiB ext4 images, built like os-minor but from trixie and another
#                 package set (ALT_PKGS: python3-minimal, openssh-server, rsync, cron,
#                 logrotate, sudo, bind9-dnsutils, ...). old = trixie minbase + ALT_PKGS
#                 installed from the `trixie` suite only (the point release, no
#                 -updates/-security) + alt config files; new = same + apt-get upgrade from
#                 trixie-updates/-security + 8 more packages (ALT_MORE_PKGS) + config edits.
#   alt-major     640 MiB ext4 images: bullseye minbase + upgrades + ALT_PKGS + ALT_MORE_PKGS
#                 + alt config (old) vs the same on bookworm (new).
#   arm64-minor   640 MiB ext4 images of another architecture (no qemu, no foreign code
#   armhf-minor   run): bookworm minbase + FOREIGN_PKGS (openssl, curl, systemd, ...)
#                 unpacked by debootstrap --foreign and tar (old) vs the same with the
#                 newer versions from bookworm-updates/-security unpacked over it (new).
#                 INFO lists the packages that changed version and the changed ELF
#                 files; CHANGED lists every changed or added file.
#
# Needs root (debootstrap, chroot, mounts). Installs debootstrap/e2fsprogs/openssl if
# missing. Network: the Debian mirror configured in /etc/apt/sources.list*.
#
# Reproducibility: the synthetic pairs (sparse-shift, random) are bit-for-bit
# reproducible. The ext4 images use a fixed UUID/hash seed, E2FSPROGS_FAKE_TIME and one
# fixed timestamp for every file (mtime/atime via touch, ctime via debugfs; as Yocto's
# REPRODUCIBLE_TIMESTAMP_ROOTFS), so the same rootfs gives the same image; the rootfs
# itself depends on what the mirror serves that day.
set -euo pipefail
shopt -s inherit_errexit

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE="$HERE/cache/corpus"
DEFAULT=(os-minor os-major binary sparse-shift random)
HELD_OUT=(alt-minor alt-major arm64-minor armhf-minor)
ALL=("${DEFAULT[@]}" "${HELD_OUT[@]}")
ONLY=()

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --cache) CACHE=$2; shift 2 ;;
    --cache=*) CACHE=${1#*=}; shift ;;
    --only) shift; while [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; do ONLY+=("$1"); shift; done ;;
    --only=*) IFS=, read -r -a ONLY <<<"${1#*=}"; shift ;;
    --list) printf '%s\n' "${DEFAULT[@]}"; printf '%s (--only)\n' "${HELD_OUT[@]}"; exit 0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "corpus.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done
[ ${#ONLY[@]} -gt 0 ] || ONLY=("${DEFAULT[@]}")
for n in "${ONLY[@]}"; do
  case " ${ALL[*]} " in *" $n "*) ;; *) echo "corpus.sh: unknown pair '$n' (known: ${ALL[*]})" >&2; exit 2 ;; esac
done

mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)
WORK="$CACHE/_work"
mkdir -p "$WORK"

log() { printf '[corpus %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- tools
APT_UPDATED=0
apt_update_once() {
  if [ $APT_UPDATED = 0 ]; then
    log "apt-get update"
    apt-get update -qq >/dev/null 2>&1 || apt-get update -q || true
    APT_UPDATED=1
  fi
}
# ensure CMD:PKG ...
ensure() {
  local want=() spec
  for spec in "$@"; do
    command -v "${spec%%:*}" >/dev/null 2>&1 || want+=("${spec#*:}")
  done
  [ ${#want[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "need root to apt-get install ${want[*]}"
  apt_update_once
  log "apt-get install ${want[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${want[@]}" >&2
}

# Deterministic pseudo-random bytes: prng SEED-STRING NBYTES
prng() {
  local key
  key=$(printf '%s' "$1" | sha256sum | cut -c1-32)
  { openssl enc -aes-128-ctr -K "$key" -iv 00000000000000000000000000000000 -nosalt \
      </dev/zero 2>/dev/null || true; } | head -c "$2"
}
# Deterministic unsigned 32-bit integers, one per line: prng_u32 SEED COUNT
prng_u32() { prng "$1" $(( $2 * 4 )) | od -An -v -tu4 -w4 | tr -d ' '; }

# overwrite FILE OFFSET SRCFILE SRCOFFSET LEN
overwrite() {
  dd if="$3" of="$1" bs=64K iflag=skip_bytes,count_bytes oflag=seek_bytes \
     skip="$4" seek="$2" count="$5" conv=notrunc status=none
}

sz() { stat -c %s "$1"; }

# finish NAME TMPDIR: write sizes + sha256 to INFO and move into place
finish() {
  local name=$1 tmp=$2 f
  {
    echo
    for f in "$tmp"/old.* "$tmp"/new.*; do
      printf '%-8s %12s bytes  sha256 %s\n' "$(basename "$f")" "$(sz "$f")" "$(sha256sum <"$f" | cut -d' ' -f1)"
    done
  } >>"$tmp/INFO"
  rm -rf "${CACHE:?}/$name"
  mv "$tmp" "$CACHE/$name"
  log "$name: done"; sed 's/^/    /' "$CACHE/$name/INFO" >&2
}

# ---------------------------------------------------------------- random
build_random() {
  local d=$1
  local MiB=$((1024 * 1024))
  local ins=$((100 * MiB + 4321)) inslen=$MiB
  log "random: 256 MiB old, +1 MiB insert at $ins, 200x100 B overwrites"
  prng corpus-random-old $((256 * MiB)) >"$d/old.img"
  { head -c "$ins" "$d/old.img"; prng corpus-random-insert "$inslen"; tail -c +$((ins + 1)) "$d/old.img"; } >"$d/new.img"
  prng corpus-random-ow-data 20000 >"$d/ow.bin"
  local newsize i=0 off
  newsize=$(sz "$d/new.img")
  while read -r off; do
    overwrite "$d/new.img" $(( off % (newsize - 100) )) "$d/ow.bin" $((i * 100)) 100
    i=$((i + 1))
  done < <(prng_u32 corpus-random-ow-offsets 200)
  rm -f "$d/ow.bin"
  cat >"$d/INFO" <<EOF
random: 256 MiB seeded random; new = 1 MiB random inserted at offset $ins + 200 x 100 B overwrites
Details: old = 256 MiB of AES-128-CTR keystream (seed corpus-random-old).
new = old with 1 MiB of other random bytes inserted at offset $ins, then 200
overwrites of 100 random bytes at pseudo-random offsets (seed corpus-random-ow-offsets).
EOF
}

# ---------------------------------------------------------------- sparse-shift
# 100 MiB "mixed" blob: 40 MiB pseudo-English text, 30 MiB structured binary records,
# 30 MiB random, interleaved in 10 MiB chunks. Deterministic (perl MINSTD LCG + prng).
make_text() { # make_text SEED BYTES
  { perl -e '
    my ($x, $n) = (shift, shift);
    my @w = qw(the of and to in is was that for on with as by at from this be are or it
      an which not have has but were had its they their been one all can more other
      system update image block delta partition device kernel file data write read
      source target patch chunk hash offset length version release package install
      boot root mount filesystem journal inode extent superblock network service
      config error warning info debug retry timeout verify signature checksum memory
      stream buffer window match literal copy compress decompress level window size
      alpha beta gamma delta epsilon zeta theta lambda sigma omega linux debian balena);
    my $out = ""; my $col = 0; my $len = 0;
    while ($len < $n) {
      $x = ($x * 48271) % 2147483647;
      my $word = $w[$x % @w];
      if ($x % 97 == 0) { $word .= sprintf(" %d", ($x >> 7) % 100000); }
      if ($x % 13 == 0) { $word .= ","; } elsif ($x % 17 == 0) { $word .= "."; }
      $out .= $word; $col += length($word) + 1;
      if ($col > 72) { $out .= "\n"; $col = 0; } else { $out .= " "; }
      if (length($out) > 65536) { print $out; $len += length($out); $out = ""; }
    }
    print $out;' "$1" "$2" 2>/dev/null || true; } | head -c "$2"
}
make_records() { # make_records SEED BYTES : 64-byte records, counters + small noise
  { perl -e '
    my ($x, $n) = (shift, shift); my $i = 0; my $len = 0; my $buf = "";
    while ($len < $n) {
      $x = ($x * 48271) % 2147483647;
      $buf .= pack("Q<L<L<a16d<S<S<L<a16", 0x1000000 + $i * 4096, $i, $x & 0xff,
        sprintf("rec-%010d", $i), $i * 0.125, $x % 7, 0xBEEF, $x & 0xffff0000,
        pack("L<4", $i ^ 0x5a5a5a5a, $x, $i * 3, 0));
      $i++;
      if (length($buf) >= 65536) { print $buf; $len += length($buf); $buf = ""; }
    }
    print $buf;' "$1" "$2" 2>/dev/null || true; } | head -c "$2"
}
build_sparse_shift() {
  local d=$1
  local MiB=$((1024 * 1024)) GiB=$((1024 * 1024 * 1024))
  local base=$((300 * MiB)) shift_by=1237
  log "sparse-shift: 1 GiB, 100 MiB mixed blob at $base, shifted by $shift_by"
  local blob="$d/blob" i
  : >"$blob"
  for i in 0 1 2 3; do
    make_text $((1000 + i)) $((10 * MiB)) >>"$blob"
    make_records $((2000 + i)) $((7 * MiB + 512 * 1024)) >>"$blob"
    prng "corpus-sparse-random-$i" $((7 * MiB + 512 * 1024)) >>"$blob"
  done
  [ "$(sz "$blob")" = $((100 * MiB)) ] || die "blob size $(sz "$blob")"
  truncate -s $GiB "$d/old.img"
  overwrite "$d/old.img" $base "$blob" 0 $((100 * MiB))
  # edits inside the blob (offsets within the blob), then place it shifted
  printf 'EDIT-ONE: a short textual change\n' >"$d/e1"
  prng corpus-sparse-edit2 4096 >"$d/e2"
  printf '\x00\x01\x02\x03\x04\x05\x06\x07' >"$d/e3"
  make_text 4242 3000 >"$d/e4"
  prng corpus-sparse-edit5 16 >"$d/e5"
  overwrite "$blob" $((5 * MiB + 3)) "$d/e1" 0 "$(sz "$d/e1")"
  overwrite "$blob" $((12 * MiB + 77)) "$d/e2" 0 4096
  overwrite "$blob" $((33 * MiB + 1001)) "$d/e3" 0 8
  overwrite "$blob" $((51 * MiB + 9)) "$d/e4" 0 3000
  overwrite "$blob" $((99 * MiB + 12345)) "$d/e5" 0 16
  truncate -s $GiB "$d/new.img"
  overwrite "$d/new.img" $((base + shift_by)) "$blob" 0 $((100 * MiB))
  # one small edit in the zero area as well (a "header" block)
  printf 'NEWHDR v2\n' >"$d/e6"
  overwrite "$d/new.img" 4096 "$d/e6" 0 10
  rm -f "$blob" "$d"/e[0-9]
  cat >"$d/INFO" <<EOF
sparse-shift: 1 GiB mostly zero; 100 MiB text/records/random blob moved by +$shift_by B, 6 small edits
Details: 1 GiB files, zero except a 100 MiB blob at offset $base (old) /
$((base + shift_by)) (new, shifted by $shift_by bytes). Blob = 4 x (10 MiB pseudo-English
text, 7.5 MiB structured 64-byte binary records, 7.5 MiB random). New: 5 edits inside the
blob (34 B text, 4 KiB random, 8 B, 3000 B text, 16 B) and 10 bytes written at offset 4096.
Files are sparse on disk.
EOF
}

# ---------------------------------------------------------------- binary
BIN_CANDIDATES=(
  "mariadb-server-core:usr/sbin/mariadbd"
  "libpython3.11:usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0"
  "libssl3:usr/lib/x86_64-linux-gnu/libcrypto.so.3"
  "systemd:usr/lib/systemd/libsystemd-shared-252.so"
)
build_binary() {
  local d=$1 spec pkg path vers v1 v2 dl
  ensure dpkg-deb:dpkg
  apt_update_once
  for spec in "${BIN_CANDIDATES[@]}"; do
    pkg=${spec%%:*} path=${spec#*:}
    mapfile -t vers < <(apt-cache madison "$pkg" 2>/dev/null | awk -F'|' '$3 ~ /Packages/ {gsub(/ /,"",$2); print $2}' | sort -u)
    [ ${#vers[@]} -ge 2 ] || { log "binary: $pkg has ${#vers[@]} version(s), skipping"; continue; }
    # two highest versions, dpkg ordering
    mapfile -t vers < <(printf '%s\n' "${vers[@]}" | perl -e '
      my @v = <STDIN>; chomp @v;
      @v = sort { system("dpkg", "--compare-versions", $a, "lt", $b) == 0 ? -1 : 1 } @v;
      print "$v[-2]\n$v[-1]\n";')
    v1=${vers[0]} v2=${vers[1]}
    log "binary: $pkg $v1 -> $v2 ($path)"
    dl="$WORK/binary-dl"; rm -rf "$dl"; mkdir -p "$dl"; chmod 777 "$dl"
    if ! (cd "$dl" && apt-get download -q "$pkg=$v1" "$pkg=$v2" >&2); then
      log "binary: download of $pkg failed, trying next candidate"; continue
    fi
    local debs=("$dl"/*.deb)
    [ ${#debs[@]} = 2 ] || { log "binary: expected 2 debs"; continue; }
    mkdir -p "$dl/x1" "$dl/x2"
    local deb1="" deb2="" f
    for f in "${debs[@]}"; do
      case "$(dpkg-deb -f "$f" Version)" in "$v1") deb1=$f ;; "$v2") deb2=$f ;; esac
    done
    [ -n "$deb1" ] && [ -n "$deb2" ] || { log "binary: cannot map debs to versions"; continue; }
    dpkg-deb -x "$deb1" "$dl/x1"; dpkg-deb -x "$deb2" "$dl/x2"
    [ -f "$dl/x1/$path" ] && [ -f "$dl/x2/$path" ] || { log "binary: $path missing in $pkg"; continue; }
    cp "$dl/x1/$path" "$d/old.bin"; cp "$dl/x2/$path" "$d/new.bin"
    cat >"$d/INFO" <<EOF
binary: $(basename "$path") from $pkg $v1 -> $v2 (Debian, stripped)
Details: /$path from Debian package $pkg, old = $v1, new = $v2
(the two highest versions apt-cache madison lists; debs $(basename "$deb1"), $(basename "$deb2")).
$(file -b "$d/old.bin" 2>/dev/null || true)
EOF
    rm -rf "$dl"
    return 0
  done
  die "binary: no candidate package with two downloadable versions"
}

# ---------------------------------------------------------------- OS images
IMG_SIZE=640M          # balenaOS root partition size (DOMAIN.md 1b)
FS_UUID=6d5b3f7c-1a2b-4c3d-8e9f-0a1b2c3d4e5f
FS_HASH_SEED=2f1e0d9c-8b7a-4655-9443-322110ffeedd
EXTRA_PKGS="curl less vim-tiny iproute2 openssh-client jq ca-certificates procps iputils-ping netbase tzdata kmod nano wget"
# Held-out pairs (alt-minor, alt-major): another package set, none of EXTRA_PKGS named.
ALT_PKGS="python3-minimal openssh-server rsync cron logrotate sudo bash-completion openssl xz-utils bzip2 file lsof psmisc bind9-dnsutils"
ALT_MORE_PKGS="curl htop strace tcpdump ethtool nftables sqlite3 vim-tiny"
# Knobs of customize, overridden per call (VAR=value make_tree ...):
#   PRODUCT     product name in /etc/product/release, hostname, issue, motd
#   APT_SUITES  all: apt sees SUITE, SUITE-updates, SUITE-security; release: SUITE only
#               (the image's final sources.list lists all three either way)
#   EDITS       demo (the os-* config edits) | alt1 (the alt config files) | alt2 (alt1
#               with the edits of an alt point release); applied when packages are installed
PRODUCT=demo-os APT_SUITES=all EDITS=demo
# Every file of every image gets this mtime/atime/ctime/crtime, as Yocto (which builds
# balenaOS) does with REPRODUCIBLE_TIMESTAMP_ROOTFS (its default value), so unchanged files
# keep identical inodes across releases. The product version lives in /etc/product/release.
ROOTFS_EPOCH=1520598896
EPOCH_V1=$ROOTFS_EPOCH EPOCH_V2=$ROOTFS_EPOCH EPOCH_V3=$ROOTFS_EPOCH

apt_uri() { # apt_uri debian|debian-security : first matching URI from sources
  local repo=$1 u
  u=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
      | grep -v '^\s*#' | grep -oE '(https?|file)://[^ ]+' | sed 's:/*$::' | grep -E "/$repo\$" | head -1 || true)
  if [ -z "$u" ]; then u="http://deb.debian.org/$repo"; fi
  printf '%s\n' "$u"
}
MIRROR=$(apt_uri debian)
SEC_MIRROR=$(apt_uri debian-security)
HOST_SUITE=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
next_suite() { case $1 in buster) echo bullseye ;; bullseye) echo bookworm ;; bookworm) echo trixie ;; trixie) echo forky ;; *) echo sid ;; esac; }
prev_suite() { case $1 in bookworm) echo bullseye ;; trixie) echo bookworm ;; forky) echo trixie ;; bullseye) echo buster ;; *) echo bookworm ;; esac; }

MOUNTS=()
cleanup_mounts() {
  local i m
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do umount -l "${MOUNTS[$i]}" 2>/dev/null || true; done
  MOUNTS=()
  # anything else left below the work dir (e.g. by a failed debootstrap)
  { findmnt -rn -o TARGET 2>/dev/null | grep -F "$WORK/" | sort -r || true; } | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
  return 0
}
trap cleanup_mounts EXIT
set -E
trap 'log "failed (exit $?) at line $LINENO: $BASH_COMMAND"' ERR

# base_rootfs SUITE -> sets BASE to the dir of a cached minbase debootstrap (never modified);
# returns 1 if debootstrap fails (suite not reachable).
base_rootfs() {
  local suite=$1 dir="$WORK/base-$1"
  BASE=$dir
  if [ ! -f "$dir.done" ]; then
    ensure debootstrap:debootstrap
    rm -rf "$dir"
    mkdir -p "$WORK/debs-$suite"
    log "debootstrap --variant=minbase $suite $MIRROR"
    if ! debootstrap --variant=minbase --cache-dir="$WORK/debs-$suite" "$suite" "$dir" "$MIRROR" >"$WORK/debootstrap-$suite.log" 2>&1; then
      tail -5 "$WORK/debootstrap-$suite.log" >&2
      # debootstrap may leave bind mounts behind on failure
      for m in proc sys dev/pts dev; do umount -l "$dir/$m" 2>/dev/null || true; done
      return 1
    fi
    touch "$dir.done"
  fi
}

chroot_run() { # chroot_run TREE CMD...
  local t=$1; shift
  # PYTHONHASHSEED=0: py3compile's .pyc output (marshal) otherwise varies from run to run
  # with the hash seed (seen with bullseye's python3.9)
  chroot "$t" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C \
    DEBIAN_FRONTEND=noninteractive PYTHONHASHSEED=0 "$@"
}

# repyc TREE: py3compile byte-compiles in parallel workers, and marshal's output depends
# on object reference counts, so a .pyc can differ from build to build (seen with
# bullseye's python3.9). Recompile every existing .pyc under /usr/lib/python3* in one
# process, in sorted order (same optimization level and source-mtime header).
repyc() {
  local t=$1 py
  for py in "$t"/usr/bin/python3.[0-9]*; do
    case $py in *[!0-9.]) continue ;; esac   # python3.N only, not python3.N-config etc.
    [ -x "$py" ] || continue
    chroot_run "$t" "/usr/bin/${py##*/}" - <<'EOF'
import glob, importlib.util, os, py_compile, sys
tag = sys.implementation.cache_tag
n = 0
for pyc in sorted(glob.glob("/usr/lib/python3*/**/__pycache__/*." + tag + ".pyc", recursive=True)):
    d = os.path.dirname(os.path.dirname(pyc))
    base = os.path.basename(pyc)[: -len("." + tag + ".pyc")]
    src = os.path.join(d, base + ".py")
    if os.path.isfile(src) and importlib.util.cache_from_source(src) == pyc:
        py_compile.compile(src, cfile=pyc, doraise=True)
        n += 1
print("repyc:", sys.version.split()[0], n, "files")
EOF
  done
}

# customize TREE SUITE VERSION EPOCH INSTALL(0|1) UPGRADE(0|1)
customize() {
  local t=$1 suite=$2 ver=$3 epoch=$4 install=$5 upgrade=$6
  # product identity, present in every image
  local dev=${PRODUCT%-os}-device
  mkdir -p "$t/etc/product"
  cat >"$t/etc/product/release" <<EOF
PRODUCT=$PRODUCT
VERSION=$ver
BASE=debian-$suite
BUILD_EPOCH=$epoch
EOF
  echo "$dev" >"$t/etc/hostname"
  printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' "$dev" >"$t/etc/hosts"
  printf '%s %s (Debian %s) \\n \\l\n\n' "$PRODUCT" "$ver" "$suite" >"$t/etc/issue"
  local sources
  sources=$(printf 'deb %s %s main\ndeb %s %s-updates main\ndeb %s %s-security main\n' \
    "$MIRROR" "$suite" "$MIRROR" "$suite" "$SEC_MIRROR" "$suite")
  if [ "$APT_SUITES" = release ]; then
    printf 'deb %s %s main\n' "$MIRROR" "$suite" >"$t/etc/apt/sources.list"
  else
    printf '%s\n' "$sources" >"$t/etc/apt/sources.list"
  fi
  if [ "$install" = 1 ] || [ "$upgrade" = 1 ]; then
    printf '#!/bin/sh\nexit 101\n' >"$t/usr/sbin/policy-rc.d"; chmod 755 "$t/usr/sbin/policy-rc.d"
    cp /etc/resolv.conf "$t/etc/resolv.conf" 2>/dev/null || true
    mount -t proc proc "$t/proc"; MOUNTS+=("$t/proc")
    mount --bind /dev "$t/dev"; MOUNTS+=("$t/dev")
    mount --bind /dev/pts "$t/dev/pts" 2>/dev/null && MOUNTS+=("$t/dev/pts")
    mount -t sysfs sys "$t/sys" 2>/dev/null && MOUNTS+=("$t/sys")
    local alog; alog="$WORK/apt-$(basename "$t").log"
    log "apt in chroot $(basename "$t") (log: $alog)"
    chroot_run "$t" apt-get update -q >"$alog" 2>&1
    [ "$upgrade" = 1 ] && chroot_run "$t" apt-get -y -q -o Dpkg::Options::=--force-confold upgrade >>"$alog" 2>&1
    # shellcheck disable=SC2086
    [ "$install" = 1 ] && chroot_run "$t" apt-get -y -q --no-install-recommends -o Dpkg::Options::=--force-confold install $EXTRA_PKGS >>"$alog" 2>&1
    chroot_run "$t" apt-get clean >>"$alog" 2>&1
    repyc "$t" >>"$alog" 2>&1
    grep -E '^[0-9]+ upgraded' "$alog" | sed 's/^/    /' >&2 || true
    cleanup_mounts
    rm -f "$t/usr/sbin/policy-rc.d"
  fi
  printf '%s\n' "$sources" >"$t/etc/apt/sources.list"
  if [ "$install" = 1 ] && [ "$EDITS" != demo ]; then
    alt_edits "$t" "$ver"
  elif [ "$install" = 1 ]; then
    # config edits of the "minor release"
    cat >"$t/etc/sysctl.d/90-demo-os.conf" <<EOF
# demo-os $ver tuning
net.core.somaxconn = 1024
vm.swappiness = 10
kernel.panic = 10
EOF
    printf '\n# demo-os\nalias ll="ls -l"\nexport EDITOR=vi\n' >>"$t/etc/bash.bashrc"
    sed -i 's/^UMASK.*/UMASK\t\t027/' "$t/etc/login.defs"
    sed -i 's/^#\?DIR_MODE=.*/DIR_MODE=0750/' "$t/etc/adduser.conf" 2>/dev/null || true
    printf 'Welcome to demo-os %s.\n' "$ver" >"$t/etc/motd"
    mkdir -p "$t/etc/ssh/ssh_config.d"
    printf 'Host *\n    ServerAliveInterval 30\n    StrictHostKeyChecking accept-new\n' >"$t/etc/ssh/ssh_config.d/90-demo-os.conf"
    echo "TZ=UTC" >>"$t/etc/environment"
  fi
  # image hygiene, like a real image build
  rm -rf "$t"/var/lib/apt/lists/* "$t"/var/cache/apt/*.bin "$t"/var/cache/apt/archives/*.deb \
         "$t"/var/cache/debconf/*-old "$t"/var/lib/dpkg/*-old "$t"/var/log/apt/* \
         "$t"/var/log/dpkg.log "$t"/var/log/alternatives.log "$t"/var/log/bootstrap.log \
         "$t"/tmp/* "$t"/var/tmp/* "$t"/root/.bash_history "$t"/var/cache/ldconfig/aux-cache
  # host keys are made at first boot on a real device (random, would differ per build)
  rm -f "$t"/etc/ssh/ssh_host_*_key "$t"/etc/ssh/ssh_host_*_key.pub
  : >"$t/etc/machine-id"
  printf 'nameserver 127.0.0.53\n' >"$t/etc/resolv.conf"
  # fixed timestamps (atime and mtime; ctime/crtime are fixed in mkimage)
  find "$t" -xdev -exec touch -h -d "@$epoch" {} +
}

# alt_edits TREE VERSION: config of the held-out pairs; EDITS=alt1 or alt2 (alt1 + a
# point release's edits: changed values, one file more, one file less)
alt_edits() {
  local t=$1 ver=$2 v2=0
  [ "$EDITS" = alt2 ] && v2=1
  mkdir -p "$t/etc/ssh/sshd_config.d" "$t/etc/sysctl.d" "$t/etc/logrotate.d" "$t/etc/cron.d" "$t/etc/sudoers.d"
  {
    echo "# $PRODUCT $ver"
    echo "PermitRootLogin prohibit-password"
    echo "PasswordAuthentication no"
    echo "X11Forwarding no"
    if [ $v2 = 1 ]; then echo "MaxAuthTries 3"; echo "ClientAliveInterval 60"; echo "ClientAliveCountMax 3"
    else echo "MaxAuthTries 6"; fi
  } >"$t/etc/ssh/sshd_config.d/50-$PRODUCT.conf"
  {
    echo "# $PRODUCT $ver"
    echo "net.ipv4.tcp_syncookies = 1"
    echo "net.ipv4.conf.all.rp_filter = $((v2 ? 2 : 1))"
    echo "fs.inotify.max_user_watches = $((v2 ? 524288 : 65536))"
    if [ $v2 = 1 ]; then echo "net.core.default_qdisc = fq"; fi
  } >"$t/etc/sysctl.d/80-$PRODUCT.conf"
  cat >"$t/etc/logrotate.d/$PRODUCT" <<EOF
/var/log/$PRODUCT/*.log {
    $([ $v2 = 1 ] && echo daily || echo weekly)
    rotate $([ $v2 = 1 ] && echo 14 || echo 4)
    compress
    delaycompress
    missingok
    notifempty
}
EOF
  printf 'SHELL=/bin/sh\nPATH=/usr/sbin:/usr/bin:/sbin:/bin\n%s 3 * * * root /usr/bin/rsync -a /etc/ /var/backups/etc/\n' \
    "$([ $v2 = 1 ] && echo 17 || echo 42)" >"$t/etc/cron.d/$PRODUCT-backup"
  printf '%%sudo ALL=(ALL:ALL) ALL\nDefaults timestamp_timeout=%s\n' "$([ $v2 = 1 ] && echo 5 || echo 15)" >"$t/etc/sudoers.d/$PRODUCT"
  chmod 0440 "$t/etc/sudoers.d/$PRODUCT"
  printf '%s %s - managed device, unauthorised access prohibited.\n' "$PRODUCT" "$ver" >"$t/etc/motd"
  if [ $v2 = 1 ]; then
    printf '\n# %s\nHISTSIZE=5000\nHISTTIMEFORMAT="%%F %%T "\n' "$PRODUCT" >>"$t/etc/bash.bashrc"
    sed -i 's/^#\?MaxRetention=.*/MaxRetention=1month/' "$t/etc/systemd/journald.conf" 2>/dev/null || true
    printf 'LANG=C.UTF-8\n' >"$t/etc/default/locale"
    mkdir -p "$t/var/log/$PRODUCT"
  else
    printf 'installed by %s %s\n' "$PRODUCT" "$ver" >"$t/etc/$PRODUCT-firstboot"
  fi
}

# mkimage TREE IMG EPOCH
mkimage() {
  local t=$1 img=$2 epoch=$3
  ensure mkfs.ext4:e2fsprogs debugfs:e2fsprogs
  if findmnt -rn -o TARGET | grep -qF "$t/"; then die "mounts left under $t"; fi
  rm -f "$img"
  E2FSPROGS_FAKE_TIME=$epoch mkfs.ext4 -q -F -t ext4 -b 4096 -I 256 -L rootfs \
    -U "$FS_UUID" -E "hash_seed=$FS_HASH_SEED" -d "$t" "$img" "$IMG_SIZE" >/dev/null
  # mke2fs -d copies ctime from the source tree (uncontrollable) and atime (changed by any
  # read of the tree after touch, relatime); rewrite both for every
  # used inode so identical trees give identical images.
  local ipg script="$img.debugfs"
  ipg=$(dumpe2fs -h "$img" 2>/dev/null | awk -F: '/^Inodes per group/ {gsub(/ /,"",$2); print $2}')
  dumpe2fs "$img" 2>/dev/null | awk -v ipg="$ipg" -v ep="$epoch" '
    /^Group [0-9]+:/ { g = $2 + 0; next }
    /^  Free inodes:/ {
      lo = g * ipg + 1; hi = (g + 1) * ipg
      nf = 0
      s = $0; sub(/^  Free inodes: */, "", s); n = split(s, r, /, */)
      for (i = 1; i <= n; i++) { if (r[i] == "") continue; m = split(r[i], ab, "-"); if (m == 1) ab[2] = ab[1]; nf++; fa[nf] = ab[1] + 0; fb[nf] = ab[2] + 0 }
      cur = lo
      for (i = 1; i <= nf; i++) { for (x = cur; x < fa[i]; x++) emit(x); cur = fb[i] + 1 }
      for (x = cur; x <= hi; x++) emit(x)
      nf = 0
    }
    function emit(ino) { if (ino == 2 || ino >= 11) printf "sif <%d> ctime @%d\nsif <%d> atime @%d\n", ino, ep, ino, ep }
  ' >"$script"
  E2FSPROGS_FAKE_TIME=$epoch debugfs -w -f "$script" "$img" >/dev/null 2>&1
  rm -f "$script"
  e2fsck -fn "$img" >/dev/null 2>&1 || die "e2fsck reports problems in $img"
}

# make_tree NAME SUITE VERSION EPOCH INSTALL UPGRADE -> builds TREE=$WORK/tree-NAME
make_tree() {
  local name=$1 suite=$2 ver=$3 epoch=$4 install=$5 upgrade=$6
  base_rootfs "$suite" || die "debootstrap of $suite failed (see $WORK/debootstrap-$suite.log)"
  TREE="$WORK/tree-$name"
  rm -rf "$TREE"; cp -a "$BASE" "$TREE"
  customize "$TREE" "$suite" "$ver" "$epoch" "$install" "$upgrade"
}

pkg_summary() { # pkg_summary TREE
  printf '%s packages, %s MiB in use\n' \
    "$(chroot "$1" dpkg-query -f '.\n' -W 2>/dev/null | wc -l)" "$(du -sm --apparent-size "$1" | cut -f1)"
}

build_os_minor() {
  local d=$1 t
  log "os-minor: $HOST_SUITE minbase vs + packages/updates/config edits"
  make_tree os-minor-old "$HOST_SUITE" 1.0.0 $EPOCH_V1 0 0; t=$TREE
  local s_old; s_old=$(pkg_summary "$t")
  mkimage "$t" "$d/old.img" $EPOCH_V1; rm -rf "$t"
  make_tree os-minor-new "$HOST_SUITE" 1.1.0 $EPOCH_V2 1 1; t=$TREE
  local s_new; s_new=$(pkg_summary "$t")
  mkimage "$t" "$d/new.img" $EPOCH_V2; rm -rf "$t"
  cat >"$d/INFO" <<EOF
os-minor: ext4 $IMG_SIZE, $HOST_SUITE minbase (${s_old%% packages*} pkgs) -> + upgrades, 14 packages, config edits (${s_new%% packages*} pkgs)
Details: $IMG_SIZE ext4 images (mkfs.ext4 -d, UUID $FS_UUID, fixed hash seed).
old = debootstrap --variant=minbase $HOST_SUITE ($MIRROR), product 1.0.0: $s_old
new = same base + apt-get upgrade from $HOST_SUITE-updates/-security + install
  $EXTRA_PKGS
  + config edits (sysctl.d, bash.bashrc, login.defs, adduser.conf, motd, ssh_config.d,
  environment, product release file), product 1.1.0: $s_new
EOF
}

build_os_major() {
  local d=$1 t old_suite new_suite mode
  old_suite=$HOST_SUITE new_suite=$(next_suite "$HOST_SUITE")
  mode="$old_suite -> $new_suite"
  if ! base_rootfs "$new_suite" >/dev/null; then
    log "os-major: $new_suite not reachable, trying $(prev_suite "$HOST_SUITE") -> $HOST_SUITE"
    old_suite=$(prev_suite "$HOST_SUITE") new_suite=$HOST_SUITE mode="$old_suite -> $new_suite"
    if ! base_rootfs "$old_suite" >/dev/null; then
      old_suite=$HOST_SUITE new_suite=$HOST_SUITE mode="same suite $HOST_SUITE, different package sets"
    fi
  fi
  log "os-major: $mode"
  make_tree os-major-old "$old_suite" 1.1.0 $EPOCH_V2 1 1; t=$TREE
  local s_old; s_old=$(pkg_summary "$t")
  mkimage "$t" "$d/old.img" $EPOCH_V2; rm -rf "$t"
  if [ "$old_suite" = "$new_suite" ]; then
    EXTRA_PKGS="python3-minimal perl busybox e2fsprogs dosfstools parted rsync gnupg sqlite3 xz-utils zstd file lsof strace" \
      make_tree os-major-new "$new_suite" 2.0.0 $EPOCH_V3 1 1
  else
    make_tree os-major-new "$new_suite" 2.0.0 $EPOCH_V3 1 1
  fi
  t=$TREE
  local s_new; s_new=$(pkg_summary "$t")
  mkimage "$t" "$d/new.img" $EPOCH_V3; rm -rf "$t"
  cat >"$d/INFO" <<EOF
os-major: ext4 $IMG_SIZE, $mode: ${s_old%% packages*} pkgs -> ${s_new%% packages*} pkgs, same extra packages and edits
Details: $IMG_SIZE ext4 images (mkfs.ext4 -d, same fixed UUID/hash seed).
old = $old_suite minbase + upgrades + the os-minor package set and config edits, product 1.1.0: $s_old
new = $new_suite minbase + upgrades + packages + the same config edits, product 2.0.0: $s_new
EOF
}

# ---------------------------------------------------------------- held-out OS images
ALT_MINOR_SUITE=trixie
ALT_MAJOR_OLD=bullseye ALT_MAJOR_NEW=bookworm

upgraded_pkgs() { # upgraded_pkgs APTLOG: "N: pkg old->new, ..." of what `apt-get upgrade` replaced
  local l
  l=$(awk '/^Unpacking .* over \(/ {
        v = $3; o = $5; gsub(/[()]/, "", v); gsub(/[()]/, "", o); sub(/:.*/, "", $2); print $2 " " o "->" v }' "$1" | sort -u)
  printf '%s: %s\n' "$(printf '%s' "$l" | grep -c . || true)" "$(printf '%s' "$l" | paste -sd, - | sed 's/,/, /g')"
}
pkg_versions() { chroot "$1" dpkg-query -f '${Package} ${Version}\n' -W 2>/dev/null | sort; }
# pkg_changes OLDLIST NEWLIST: "N same version, N changed version (pkg old->new, ...), N added, N removed"
pkg_changes() {
  awk 'NR == FNR { o[$1] = $2; next }
       { if (!($1 in o)) add++; else if (o[$1] == $2) same++; else { ch++; l = l (ch > 1 ? ", " : "") $1 " " o[$1] "->" $2 } seen[$1] = 1 }
       END { for (p in o) if (!(p in seen)) rem++
             printf "%d same version, %d changed version (%s), %d added, %d removed\n", same, ch, l, add, rem }' "$1" "$2"
}

build_alt_minor() {
  local d=$1 t s=$ALT_MINOR_SUITE
  log "alt-minor: $s minbase + ALT_PKGS (release only) vs + upgrades, ALT_MORE_PKGS, config edits"
  PRODUCT=alt-os APT_SUITES=release EDITS=alt1 EXTRA_PKGS="$ALT_PKGS" \
    make_tree alt-minor-old "$s" 1.0.0 $EPOCH_V1 1 0
  t=$TREE
  local s_old; s_old=$(pkg_summary "$t"); pkg_versions "$t" >"$d/pkgs-old"
  mkimage "$t" "$d/old.img" $EPOCH_V1; rm -rf "$t"
  PRODUCT=alt-os APT_SUITES=all EDITS=alt2 EXTRA_PKGS="$ALT_PKGS $ALT_MORE_PKGS" \
    make_tree alt-minor-new "$s" 1.1.0 $EPOCH_V2 1 1
  t=$TREE
  local s_new up ch; s_new=$(pkg_summary "$t"); up=$(upgraded_pkgs "$WORK/apt-tree-alt-minor-new.log")
  pkg_versions "$t" >"$d/pkgs-new"; ch=$(pkg_changes "$d/pkgs-old" "$d/pkgs-new"); rm -f "$d"/pkgs-*
  mkimage "$t" "$d/new.img" $EPOCH_V2; rm -rf "$t"
  case $ch in *" 0 changed version"*) log "alt-minor: WARNING: no package changed version (nothing pending in $s-updates/-security?)" ;; esac
  cat >"$d/INFO" <<EOF
alt-minor: ext4 $IMG_SIZE, $s $(cat "$WORK/base-$s/etc/debian_version") + alt package set (${s_old%% packages*} pkgs) -> + $s-updates/-security ($(printf '%s' "$ch" | grep -oE '[0-9]+ changed version' | cut -d' ' -f1) pkgs changed version), 8 more packages, config edits (${s_new%% packages*} pkgs)
Details: $IMG_SIZE ext4 images (mkfs.ext4 -d, same fixed UUID/hash seed and timestamps as os-*).
old = debootstrap --variant=minbase $s ($MIRROR; point release $(cat "$WORK/base-$s/etc/debian_version")) + apt-get install
  $ALT_PKGS
  with only "deb $MIRROR $s main" in sources.list (no $s-updates, no $s-security),
  alt config files (sshd_config.d, sysctl.d, logrotate.d, cron.d, sudoers.d, motd,
  firstboot marker), product alt-os 1.0.0: $s_old
new = same base + apt-get upgrade from $s-updates/-security, then install of the same
  packages + $ALT_MORE_PKGS,
  config edits (changed sshd/sysctl/logrotate/cron/sudoers values, bash.bashrc,
  default/locale, /var/log/alt-os, no firstboot marker), product alt-os 1.1.0: $s_new
upgraded by apt-get upgrade (the minbase part; pkg old->new) ${up%%:*}: ${up#*: }
old -> new packages: $ch
Both: SSH host keys removed; final sources.list lists $s, $s-updates, $s-security.
Built $(date -u +%Y-%m-%d) from the live mirror ($s InRelease $(sed -n 's/^Date: //p' "$WORK/base-$s/var/lib/apt/lists/"*_dists_"${s}"_InRelease 2>/dev/null | head -1)).
EOF
}

build_alt_major() {
  local d=$1 t o=$ALT_MAJOR_OLD n=$ALT_MAJOR_NEW
  log "alt-major: $o -> $n, ALT_PKGS + ALT_MORE_PKGS on both"
  base_rootfs "$o" || die "alt-major: debootstrap of $o from $MIRROR failed (see $WORK/debootstrap-$o.log); set ALT_MAJOR_OLD in this script to a suite the mirror still has"
  PRODUCT=alt-os APT_SUITES=all EDITS=alt2 EXTRA_PKGS="$ALT_PKGS $ALT_MORE_PKGS" \
    make_tree alt-major-old "$o" 1.1.0 $EPOCH_V2 1 1
  t=$TREE
  local s_old u_old; s_old=$(pkg_summary "$t"); u_old=$(upgraded_pkgs "$WORK/apt-tree-alt-major-old.log")
  pkg_versions "$t" >"$d/pkgs-old"
  mkimage "$t" "$d/old.img" $EPOCH_V2; rm -rf "$t"
  PRODUCT=alt-os APT_SUITES=all EDITS=alt2 EXTRA_PKGS="$ALT_PKGS $ALT_MORE_PKGS" \
    make_tree alt-major-new "$n" 2.0.0 $EPOCH_V3 1 1
  t=$TREE
  local s_new u_new ch; s_new=$(pkg_summary "$t"); u_new=$(upgraded_pkgs "$WORK/apt-tree-alt-major-new.log")
  pkg_versions "$t" >"$d/pkgs-new"; ch=$(pkg_changes "$d/pkgs-old" "$d/pkgs-new" | sed 's/ (.*)//'); rm -f "$d"/pkgs-*
  mkimage "$t" "$d/new.img" $EPOCH_V3; rm -rf "$t"
  cat >"$d/INFO" <<EOF
alt-major: ext4 $IMG_SIZE, $o -> $n with the alt package set: ${s_old%% packages*} pkgs -> ${s_new%% packages*} pkgs, same alt config
Details: $IMG_SIZE ext4 images (mkfs.ext4 -d, same fixed UUID/hash seed and timestamps as os-*).
old = debootstrap --variant=minbase $o ($MIRROR) + apt-get upgrade from $o-updates/-security
  (${u_old%%:*} upgraded) + install of
  $ALT_PKGS $ALT_MORE_PKGS
  + the alt config (as alt-minor's new), product alt-os 1.1.0: $s_old
new = the same on $n (${u_new%%:*} upgraded), product alt-os 2.0.0: $s_new
old -> new packages: $ch
Both: SSH host keys removed. Built $(date -u +%Y-%m-%d) from the live mirror.
EOF
}


# ---------------------------------------------------------------- held-out foreign-arch images
# arm64-minor / armhf-minor: a point-release update of a Debian tree of another
# architecture, made without running any of its code (no qemu): debootstrap's first stage
# (--foreign) downloads and unpacks the packages, the rest are unpacked with tar, and the
# newer versions from SUITE-updates/-security are unpacked over the tree.
FOREIGN_SUITE=bookworm
FOREIGN_PKGS="openssl libssl3 curl libcurl4 ca-certificates systemd libsystemd-shared udev iproute2 procps kmod"

# foreign_apt ARCH: an apt of its own (config, lists, cache under $WORK/apt-ARCH) that
# sees SUITE, SUITE-updates and SUITE-security for ARCH; sets FAPT to its -o options.
foreign_apt() {
  local arch=$1 r="$WORK/apt-$1" s=$FOREIGN_SUITE key=/usr/share/keyrings/debian-archive-keyring.gpg
  mkdir -p "$r/etc/apt/apt.conf.d" "$r/etc/apt/preferences.d" "$r/etc/apt/sources.list.d" \
    "$r/var/lib/apt/lists/partial" "$r/var/cache/apt/archives/partial" "$r/var/lib/dpkg"
  : >"$r/var/lib/dpkg/status"
  printf 'deb [arch=%s signed-by=%s] %s %s main\n' \
    "$arch" "$key" "$MIRROR" "$s" "$arch" "$key" "$MIRROR" "$s-updates" "$arch" "$key" "$SEC_MIRROR" "$s-security" \
    >"$r/etc/apt/sources.list"
  FAPT=(-o "Dir=$r" -o "Dir::State::status=$r/var/lib/dpkg/status" -o "APT::Architecture=$arch"
        -o "APT::Architectures::=$arch" -o "Debug::NoLocking=1" -o "APT::Sandbox::User=root")
  log "$arch: apt-get update ($s, $s-updates, $s-security)"
  apt-get -q "${FAPT[@]}" update >"$WORK/apt-$arch.log" 2>&1 || { tail -5 "$WORK/apt-$arch.log" >&2; die "$arch: apt-get update failed"; }
}

# unpack_deb DEB TREE: unpack a deb's files over TREE (as dpkg would, keeping /bin -> usr/bin)
unpack_deb() {
  dpkg-deb --fsys-tarfile "$1" | tar -x -C "$2" --keep-directory-symlink --numeric-owner -p -f -
}
deb_files() { dpkg-deb --fsys-tarfile "$1" | tar -t -f - | grep -v '/$' | sed 's:^\./::' | sort; }

# foreign_status TREE DEB...: a dpkg status file listing the debs as unpacked
foreign_status() {
  local t=$1 deb; shift
  for deb in "$@"; do
    dpkg-deb -f "$deb" | awk 'NR == 1 { print; print "Status: install ok unpacked"; next } { print }'
    echo
  done >"$t/var/lib/dpkg/status"
}

# foreign_tree ARCH TREE PKGLIST: the first stage of debootstrap --foreign (cached in
# $WORK/base-SUITE-ARCH), then every downloaded deb unpacked; PKGLIST gets "pkg version deb"
foreign_tree() {
  local arch=$1 t=$2 list=$3 base="$WORK/base-$FOREIGN_SUITE-$1" deb
  ensure debootstrap:debootstrap dpkg-deb:dpkg
  if [ ! -f "$base.done" ]; then
    rm -rf "$base"; mkdir -p "$WORK/debs-$FOREIGN_SUITE-$arch"
    log "debootstrap --foreign --variant=minbase --arch=$arch $FOREIGN_SUITE $MIRROR"
    debootstrap --foreign --variant=minbase --arch="$arch" --include="${FOREIGN_PKGS// /,}" \
      --cache-dir="$WORK/debs-$FOREIGN_SUITE-$arch" "$FOREIGN_SUITE" "$base" "$MIRROR" \
      >"$WORK/debootstrap-$FOREIGN_SUITE-$arch.log" 2>&1 \
      || { tail -5 "$WORK/debootstrap-$FOREIGN_SUITE-$arch.log" >&2; die "$arch: debootstrap --foreign failed"; }
    touch "$base.done"
  fi
  rm -rf "$t"; cp -a "$base" "$t"
  # debootstrap unpacked the required packages; unpack all (required + minbase + include)
  : >"$list"
  while read -r _ deb; do
    deb="$t$deb"
    unpack_deb "$deb" "$t"
    printf '%s %s %s\n' "$(dpkg-deb -f "$deb" Package)" "$(dpkg-deb -f "$deb" Version)" "$deb" >>"$list"
  done <"$t/debootstrap/debpaths"
  sort -o "$list" "$list"
}

# foreign_finish TREE PKGLIST: dpkg status, image hygiene, fixed timestamps
foreign_finish() {
  local t=$1 list=$2
  # shellcheck disable=SC2046
  foreign_status "$t" $(cut -d' ' -f3 "$list")
  rm -rf "$t/debootstrap" "$t"/var/cache/apt/archives/*.deb "$t"/var/lib/apt/lists/*
  printf 'deb %s %s main\ndeb %s %s-updates main\ndeb %s %s-security main\n' \
    "$MIRROR" "$FOREIGN_SUITE" "$MIRROR" "$FOREIGN_SUITE" "$SEC_MIRROR" "$FOREIGN_SUITE" >"$t/etc/apt/sources.list"
  : >"$t/etc/machine-id"
  find "$t" -xdev -exec touch -h -d "@$ROOTFS_EPOCH" {} +
}

# build_foreign_minor DIR ARCH
build_foreign_minor() {
  local d=$1 arch=$2 s=$FOREIGN_SUITE name="$2-minor"
  local old="$WORK/tree-$name-old" new="$WORK/tree-$name-new" dl="$WORK/dl-$name"
  log "$name: $s $arch minbase + packages (old) vs + $s-updates/-security unpacked over it (new)"
  foreign_tree "$arch" "$old" "$d/pkgs-old"
  foreign_apt "$arch"
  # newer versions: apt's candidate from SUITE + -updates + -security, where it differs
  local pkgs cands
  mapfile -t pkgs < <(cut -d' ' -f1 "$d/pkgs-old")
  cands=$(apt-cache "${FAPT[@]}" policy "${pkgs[@]}" 2>/dev/null \
          | awk '/^[^ ]/ { p = $1; sub(/:.*/, "", p) } /^  Candidate:/ { print p, $2 }')
  awk 'NR == FNR { c[$1] = $2; next } ($1 in c) && c[$1] != $2 && c[$1] != "(none)" { print $1, $2, c[$1] }' \
    <(printf '%s\n' "$cands") "$d/pkgs-old" >"$d/changed"
  rm -rf "$dl"; mkdir -p "$dl"; chmod 777 "$dl"
  local p v1 v2 deb olddeb n=0
  while read -r p v1 v2; do
    (cd "$dl" && apt-get -q "${FAPT[@]}" download "$p=$v2" >>"$WORK/apt-$arch.log" 2>&1) || die "$name: download of $p=$v2 failed"
    n=$((n + 1))
  done <"$d/changed"
  log "$name: $n packages have a newer version in $s-updates/-security"
  [ "$n" -gt 0 ] || log "$name: WARNING: no package changed version"
  rm -rf "$new"; cp -a "$old" "$new"
  awk -v o="$old/" -v n="$new/" '{ sub("^" o, n, $3); print }' "$d/pkgs-old" >"$d/pkgs-new"
  while read -r p v1 v2; do
    deb=$(ls "$dl/${p}_"*.deb); olddeb=$(awk -v p="$p" '$1 == p { print $3 }' "$d/pkgs-old")
    olddeb=${olddeb/#$old/$new}
    # files the old version had and the new one has not are removed, as dpkg would
    comm -23 <(deb_files "$olddeb") <(deb_files "$deb") | while read -r f; do rm -f "$new/$f"; done
    unpack_deb "$deb" "$new"
    cp "$deb" "$new/var/cache/apt/archives/"
    awk -v p="$p" -v v="$v2" -v deb="$new/var/cache/apt/archives/${deb##*/}" \
      '$1 == p { $2 = v; $3 = deb } { print }' "$d/pkgs-new" >"$d/pkgs-new.tmp"
    mv "$d/pkgs-new.tmp" "$d/pkgs-new"
  done <"$d/changed"
  foreign_finish "$old" "$d/pkgs-old"
  foreign_finish "$new" "$d/pkgs-new"
  # what changed, counted on the trees
  local files_changed elf_changed
  files_changed=$( (cd "$new" && find . -type f -print0 | sort -z | xargs -0 -n 200 sh -c '
      for f; do cmp -s "$f" "$0/$f" || echo "$f"; done' "$old") | tee "$d/files-changed" | wc -l)
  elf_changed=$( (cd "$new" && while read -r f; do [ "$(head -c 4 "$f" | od -An -tx1 | tr -d ' ')" = 7f454c46 ] && echo "$f" || true; done <"$d/files-changed") | tee "$d/elf-changed" | wc -l)
  local s_old s_new
  s_old="$(wc -l <"$d/pkgs-old") packages, $(du -sm --apparent-size "$old" | cut -f1) MiB"
  s_new="$(wc -l <"$d/pkgs-new") packages, $(du -sm --apparent-size "$new" | cut -f1) MiB"
  mkimage "$old" "$d/old.img" "$ROOTFS_EPOCH"
  mkimage "$new" "$d/new.img" "$ROOTFS_EPOCH"
  rm -rf "$old" "$new" "$dl"
  cat >"$d/INFO" <<EOF
$name: ext4 $IMG_SIZE, Debian $s $arch minbase + packages ($s_old) -> $n packages updated from $s-updates/-security; $files_changed files changed, $elf_changed of them ELF
Details: $IMG_SIZE ext4 images (mkfs.ext4 -d, same fixed UUID/hash seed and timestamps as os-*).
No $arch code runs: old = the first stage of debootstrap --foreign --variant=minbase
  --arch=$arch $s ($MIRROR, point release $(cat "$WORK/base-$s-$arch/etc/debian_version")) with --include
  $FOREIGN_PKGS
  (and their dependencies), every downloaded deb unpacked with tar, a dpkg status file listing
  them as unpacked, /debootstrap and the debs removed: $s_old
new = old + the newer version of each package that has one in $s-updates or
  $s-security (apt's candidate), unpacked over the tree (files the old version had and the
  new one has not removed), status file updated: $s_new
Packages that changed version ($n; pkg old -> new):
$(awk '{ printf "  %s %s -> %s\n", $1, $2, $3 }' "$d/changed")
Files changed or added (regular files; all listed in CHANGED): $files_changed, of them ELF ($elf_changed):
$(sed 's/^\.\//  \//' "$d/elf-changed")
Built $(date -u +%Y-%m-%d) from the live mirror.
EOF
  sed 's/^\.\//\//' "$d/files-changed" >"$d/CHANGED"
  rm -f "$d/pkgs-old" "$d/pkgs-new" "$d/changed" "$d/files-changed" "$d/elf-changed"
}

# ---------------------------------------------------------------- main
ensure openssl:openssl perl:perl-base od:coreutils
for name in "${ONLY[@]}"; do
  if [ -f "$CACHE/$name/INFO" ]; then
    log "$name: already built ($CACHE/$name), skipping"
    continue
  fi
  tmp="$CACHE/$name.partial"
  rm -rf "$tmp"; mkdir -p "$tmp"
  case $name in
    os-minor) build_os_minor "$tmp" ;;
    os-major) build_os_major "$tmp" ;;
    binary) build_binary "$tmp" ;;
    sparse-shift) build_sparse_shift "$tmp" ;;
    random) build_random "$tmp" ;;
    alt-minor) build_alt_minor "$tmp" ;;
    alt-major) build_alt_major "$tmp" ;;
    arm64-minor) build_foreign_minor "$tmp" arm64 ;;
    armhf-minor) build_foreign_minor "$tmp" armhf ;;
  esac
  finish "$name" "$tmp"
done
log "corpus ready in $CACHE"
