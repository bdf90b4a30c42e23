#!/usr/bin/env bash
# Puts our `netlab` where sudo finds it (/usr/local/bin), unless another
# program of that name (e.g. ipspace's netlab, PyPI `networklab`) is already
# on PATH: that one is left alone and we say how to run ours.
set -euo pipefail
cd "$(dirname "$0")/.."
ours="$(pwd)/.venv/bin/netlab"
target=/usr/local/bin/netlab
marker="netlab-k8s"   # our console script's distribution name

is_ours() { [ -L "$1" ] && [ "$(readlink -f "$1")" = "$(readlink -f "$ours")" ]; }

if is_ours "$target"; then exit 0; fi
existing=$(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH command -v netlab 2>/dev/null || true)
if [ -n "$existing" ] && ! is_ours "$existing"; then
  echo "netlab: another 'netlab' is on PATH ($existing), probably ipspace's netlab (networklab)."
  echo "netlab: leaving it alone; run this project's command as $ours"
  exit 0
fi
if [ -e "$target" ] || [ -L "$target" ]; then
  echo "netlab: $target exists and is not ours; leaving it alone; run $ours"
  exit 0
fi
if [ "$(id -u)" = 0 ]; then
  ln -s "$ours" "$target"
  echo "netlab: linked $target -> $ours ($marker)"
else
  echo "netlab: run 'sudo $0' to link $target, or run $ours"
fi
