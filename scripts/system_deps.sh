#!/usr/bin/env bash
# System packages some tests drive for real: Debian's chromium (the human-evaluation browser test, through
# Playwright's Python package) and PostgreSQL (the prediction-log test); and tcmalloc, which the `tunewise` command
# preloads when it is installed (faster training in less memory: docs/benchmarks.md, "Allocator"). Installs only
# what is missing, and only where apt-get can run (as root); elsewhere those tests skip and say why, and tunewise
# runs on glibc's malloc. Safe to rerun.
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
[ -n "$(ls /usr/lib/*/libtcmalloc_minimal.so.4 /lib/*/libtcmalloc_minimal.so.4 2>/dev/null)" ] || missing+=(libtcmalloc-minimal4)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "system_deps: ${missing[*]} missing and apt-get unavailable; the tests that need them will be skipped" >&2
  exit 0
fi
echo "system_deps: installing ${missing[*]} from Debian's packages"
DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null \
  || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null; }
