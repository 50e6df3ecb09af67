#!/bin/sh
# Regenerates docs/report.png, the README's picture of `delta report`: builds
# a small ext4 pair (`mkfs.ext4 -d`: changed and new text, gzip changelogs
# with a new entry, a patched and a new executable, random bytes), runs
# `delta gen --report` and `delta report`, and screenshots the page with
# headless Chromium (apt-get install chromium). The images and the page are
# left in the folder printed at the end.
#
#   scripts/report-screenshot.sh [OUT.png]   (default docs/report.png)
set -eu
cd "$(dirname "$0")/.."
out=${1:-docs/report.png}
for tool in mkfs.ext4 gzip chromium; do
    command -v "$tool" >/dev/null || { echo "$tool is needed" >&2; exit 1; }
done
cargo build -q -p delta-cli
delta=${CARGO_TARGET_DIR:-target}/debug/delta
work=$(mktemp -d)

changelog() { # NAME ENTRIES
    i=1
    while [ "$i" -le "$2" ]; do
        printf '%s (1.%d) unstable; urgency=medium\n\n  * Fix bug #%d in module %d.\n\n -- Maintainer <m@example.org>  Mon, %02d Jan 2024\n\n' \
            "$1" "$i" $((i * 7919 % 100000)) $((i * 31 % 977)) $((i % 28 + 1))
        i=$((i + 1))
    done
}

tree() { # DIR VERSION (0 old, 1 new)
    d=$1 v=$2
    mkdir -p "$d/etc/default" "$d/usr/bin" "$d/usr/lib/firmware" "$d/usr/share/locale" "$d/var/lib/pkg"
    for name in network sshd locale keyboard; do
        changelog "$name" 40 >"$d/etc/default/$name"
    done
    for pkg in openssl zlib systemd curl; do
        mkdir -p "$d/usr/share/doc/$pkg"
        changelog "$pkg" $((600 + v * 3)) | gzip -9n >"$d/usr/share/doc/$pkg/changelog.gz"
    done
    for lang in de fr es it pt nl; do
        changelog "$lang" $((300 + v * 40)) >"$d/usr/share/locale/$lang.txt"
    done
    cp /usr/bin/ls "$d/usr/bin/ls"
    cp /usr/bin/find "$d/usr/bin/find"
    if [ "$v" = 1 ]; then
        # Patched executables (one edit; an edit every 3000 bytes, as a
        # rebuild moves addresses), a new one, new firmware (random bytes).
        printf 'patched' | dd of="$d/usr/bin/ls" bs=1 seek=20000 conv=notrunc 2>/dev/null
        at=4096
        while [ "$at" -lt 200000 ]; do
            printf '\001\002' | dd of="$d/usr/bin/find" bs=1 seek="$at" conv=notrunc 2>/dev/null
            at=$((at + 3000))
        done
        cp /usr/bin/du "$d/usr/bin/du"
        head -c 65536 /dev/urandom >"$d/usr/lib/firmware/wifi.bin"
        head -c 32768 /dev/urandom >"$d/var/lib/pkg/state.db"
        echo "changed" >>"$d/etc/default/network"
    else
        head -c 32768 /dev/urandom >"$d/var/lib/pkg/state.db"
    fi
}

tree "$work/old" 0
tree "$work/new" 1
mkfs.ext4 -q -F -b 4096 -d "$work/old" "$work/old.img" 16M
mkfs.ext4 -q -F -b 4096 -d "$work/new" "$work/new.img" 16M
"$delta" gen "$work/old.img" "$work/new.img" -o "$work/update.delta" --report "$work/report.json" >/dev/null
"$delta" report "$work/report.json" -o "$work/report.html"
profile=$(mktemp -d)
chromium --headless --no-sandbox --disable-gpu --disable-background-networking \
    --disable-component-update --disable-sync --no-first-run --hide-scrollbars \
    --user-data-dir="$profile" --screenshot="$PWD/$out" --window-size=1200,900 \
    "file://$work/report.html" 2>/dev/null
rm -rf "$profile"
echo "$out: $(wc -c <"$out") bytes; images, report and page in $work"
