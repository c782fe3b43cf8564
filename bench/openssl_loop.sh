#!/usr/bin/env bash
# The peer of the verification benchmark: what a cron job would do, one target at a time.
# Usage: openssl_loop.sh FILE   (one host:port per line); prints one fingerprint per target.
set -euo pipefail
while read -r target; do
  [[ -n "$target" ]] || continue
  openssl s_client -connect "$target" </dev/null 2>/dev/null \
    | openssl x509 -noout -fingerprint -sha256
done < "$1"
