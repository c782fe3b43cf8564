#!/bin/sh
# certlocker delivery hook, run by OpenBao/Vault Agent `exec` after a template changed.
#
#   certlocker-deploy.sh --check 'CMD' --reload 'CMD' [--start 'CMD'] STAGED LIVE
#
# STAGED is the file the agent rendered: leaf, chain and key in one file. The hook
# refuses a key that does not match the leaf, installs STAGED over LIVE with an atomic
# rename (creating LIVE's folder if needed), runs the server's config check, then its
# reload. If the check or the reload fails, the previous LIVE file is put back, so the
# file on disk is always what the server runs, and the hook exits non-zero.
# First install (no LIVE file before): a server configured for this certificate could
# not start without it, so a failed reload means there is nothing running to reload.
# The hook then runs --start (if given) and keeps the new file either way: it matched
# its key and passed the check, and there is no previous file to go back to. A failed
# check on a first install removes the new file again (the server never ran with it).
# If LIVE already equals STAGED there is nothing to do (an agent restart re-renders).
# Output never contains key material.
set -eu
umask 077

check="" reload="" start=""
while [ $# -gt 0 ]; do
    case "$1" in
        --check) check="$2"; shift 2 ;;
        --reload) reload="$2"; shift 2 ;;
        --start) start="$2"; shift 2 ;;
        --) shift; break ;;
        -*) echo "certlocker-deploy: unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
[ $# -eq 2 ] || { echo "usage: $0 --check CMD --reload CMD [--start CMD] STAGED LIVE" >&2; exit 2; }
staged="$1" live="$2"
[ -n "$reload" ] || { echo "certlocker-deploy: --reload is required" >&2; exit 2; }
[ -s "$staged" ] || { echo "certlocker-deploy: $staged is missing or empty" >&2; exit 1; }

cert_pub=$(openssl x509 -in "$staged" -noout -pubkey 2>/dev/null) || {
    echo "certlocker-deploy: no certificate in $staged" >&2; exit 1; }
key_pub=$(openssl pkey -in "$staged" -pubout 2>/dev/null) || {
    echo "certlocker-deploy: no private key in $staged" >&2; exit 1; }
if [ "$cert_pub" != "$key_pub" ]; then
    echo "certlocker-deploy: REFUSED: private key does not match the certificate in $staged" >&2
    exit 1
fi

if [ -f "$live" ] && cmp -s "$staged" "$live"; then
    echo "certlocker-deploy: $live is already current"
    exit 0
fi

dir=$(dirname "$live")
mkdir -p "$dir"
tmp="$dir/.$(basename "$live").certlocker.$$"
prev="$dir/.$(basename "$live").certlocker-prev"
rm -f "$prev"
trap 'rm -f "$tmp"' EXIT
cp "$staged" "$tmp"
chmod 600 "$tmp"
first=yes
if [ -f "$live" ]; then first=no; cp -p "$live" "$prev"; fi

rollback() {
    if [ "$first" = no ]; then
        mv -f "$prev" "$live"
        echo "certlocker-deploy: $1 failed; restored the previous $live" >&2
    else
        rm -f "$live"
        echo "certlocker-deploy: $1 failed; removed the new $live (there was no previous one)" >&2
    fi
    exit 1
}

fingerprint() {
    openssl x509 -in "$live" -noout -fingerprint -sha256 | sed 's/.*=//; s/://g' | tr 'A-F' 'a-f'
}

mv -f "$tmp" "$live"
if [ -n "$check" ]; then
    sh -c "$check" >&2 || rollback "check ($check)"
fi
if sh -c "$reload" >&2; then
    rm -f "$prev"
    echo "certlocker-deploy: installed $live (sha256 $(fingerprint)) and reloaded"
    exit 0
fi
[ "$first" = yes ] || rollback "reload ($reload)"
# First install: nothing was running with this file, so there was nothing to reload.
if [ -z "$start" ]; then
    echo "certlocker-deploy: installed $live (sha256 $(fingerprint)), the first one here;" \
         "reload ($reload) failed, so the server is not running: it serves this file" \
         "when it starts"
    exit 0
fi
if sh -c "$start" >&2; then
    echo "certlocker-deploy: installed $live (sha256 $(fingerprint)), the first one here," \
         "and started the server"
    exit 0
fi
echo "certlocker-deploy: installed $live (sha256 $(fingerprint)), the first one here;" \
     "reload and start ($start) failed: the file stays (it matches its key and passed" \
     "the check), fix the server and start it" >&2
exit 1
