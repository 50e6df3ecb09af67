#!/usr/bin/env bash
# Makes the ext4 sample pair of the README's quick start: OUT/old.img and OUT/new.img
# (16 MiB each), from the fixed inputs in testdata/ext4 and changelogs written here.
#
#   scripts/sample-ext4.sh [OUT]      # default: target/sample-ext4
#
# new.img differs from old.img as an OS update does: one gzip changelog gains two
# entries (the others are unchanged), /etc/os-release names the next version, and
# /usr/bin/hello is new. Same inputs, same images: file times, UUID, hash seed and
# mkfs time are fixed. Needs mkfs.ext4 (e2fsprogs), gzip and awk; runs as any user.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
inputs=$here/../testdata/ext4
out=${1:-target/sample-ext4}
mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/sample-ext4.XXXXXX")
trap 'rm -rf "$work"' EXIT
export LC_ALL=C

# A Debian-style changelog of ENTRIES entries, newest first. Entry i depends only on
# (SEED, i), so the same package with more entries keeps the older ones unchanged.
# The words come from a portable generator (plain arithmetic, exact in doubles).
changelog() {
  awk -v pkg="$1" -v seed="$2" -v entries="$3" 'BEGIN {
    n = split("fix update build package support driver kernel firmware config memory " \
      "device network boot image partition service release security patch timeout " \
      "upstream backport regression warning error option default module library " \
      "systemd udev dbus mount journal rootfs overlay container engine supervisor " \
      "wifi bluetooth modem serial gpio i2c spi usb display audio camera sensor", w, " ")
    for (i = entries; i >= 1; i--) {
      x = (seed * 7919 + i * 104729) % 2147483647
      printf "%s (%d.%d.%d-1) stable; urgency=medium\n\n", pkg, 1 + int(i / 100), int(i / 10) % 10, i % 10
      lines = 2 + i % 4
      for (l = 0; l < lines; l++) {
        printf "  *"
        words = 6 + (x % 9)
        for (k = 0; k < words; k++) {
          x = (x * 16807) % 2147483647
          printf " %s", w[1 + x % n]
        }
        printf ".\n"
      }
      day = 1 + i % 28
      printf "\n -- Build Bot <build@example.org>  Mon, %02d Jan %d 12:00:00 +0000\n\n", day, 2000 + int(i / 40)
    }
  }'
}

# tree ROOT ENTRIES_OF_LIBFOO OS_RELEASE [NEW_BINARY]
tree() {
  local root=$1 foo=$2
  mkdir -p "$root/etc" "$root/usr/bin"
  cp "$3" "$root/etc/os-release"
  if [ $# -ge 4 ]; then
    cp "$4" "$root/usr/bin/hello"
    chmod 755 "$root/usr/bin/hello"
  fi
  local pkg seed entries
  while read -r pkg seed entries; do
    [ "$pkg" = libfoo ] && entries=$foo
    mkdir -p "$root/usr/share/doc/$pkg"
    changelog "$pkg" "$seed" "$entries" | gzip -9n > "$root/usr/share/doc/$pkg/changelog.Debian.gz"
  done <<'EOF'
libfoo 11 600
busybox 23 900
openssh 37 700
systemd 41 1200
EOF
  find "$root" -type d -exec chmod 755 {} +
  find "$root" -type f ! -path '*/usr/bin/*' -exec chmod 644 {} +
  find "$root" -exec touch -h -d @1700000000 {} +
}

tree "$work/old" 600 "$inputs/os-release.old"
tree "$work/new" 602 "$inputs/os-release.new" "$inputs/hello-2.1.bin"

for name in old new; do
  rm -f "$out/$name.img"
  truncate -s 16M "$out/$name.img"
  E2FSPROGS_FAKE_TIME=1700000000 mkfs.ext4 -q -F -b 4096 -N 256 \
    -E hash_seed=6d5b3f7c-1a2b-4c3d-8e9f-0a1b2c3d4e5f \
    -U 6d5b3f7c-1a2b-4c3d-8e9f-0a1b2c3d4e5f \
    -d "$work/$name" "$out/$name.img"
  # mkfs -d copies each file's change time (which touch cannot set) and owner (the
  # user running this): fix them here, so that any user makes the same images.
  (cd "$work/$name" && find . | sed 's|^\.||; s|^$|/|') | while read -r path; do
    printf 'sif "%s" %s\n' "$path" "ctime @1700000000" "$path" "uid 0" "$path" "gid 0"
  done > "$work/$name.fix"
  E2FSPROGS_FAKE_TIME=1700000000 debugfs -w -f "$work/$name.fix" "$out/$name.img" > /dev/null 2>&1
done
echo "$out/old.img $out/new.img"
