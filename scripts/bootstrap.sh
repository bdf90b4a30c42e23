#!/usr/bin/env bash
# Installs what netlab needs on a Debian machine, idempotently:
# the Debian packages (only the missing ones) and a .venv with the Python side.
# Fast when everything is already there (a stamp per step).
set -euo pipefail
cd "$(dirname "$0")/.."

DEB_PACKAGES=(
  mininet          # mnexec (the PyPI wheel does not ship it)
  bridge-utils     # brctl, used by Mininet's LinuxBridge
  net-tools        # ifconfig, used by Mininet
  ethtool iproute2 iputils-ping tcpdump
  iperf3           # bench/overlay
  curl             # demo and tests: HTTP between pods
  nftables         # nft: Service VIPs (kube-proxy's nftables mode) in each node
  etcd-server      # store: etcd (a cluster inside the lab, or one on loopback for the tests)
  dnsperf          # bench/dns: the load generator
  dnsmasq-base     # bench/dns: the reference server (the binary only; `dnsmasq` would start a system service)
  bind9-dnsutils   # dig: bench/dns checks both servers' answers
  libpcap0.8       # netlab capture -f: tcpdump's filter language, compiled by libpcap
  tshark           # tests and bench/inspect: a real pcapng reader to check ours against
  graphviz         # netlab draw: dot lays the lab out
  wrk              # bench/sidecar: the HTTP load generator
  unzip            # scripts/kubectl.sh: kubectl out of its npm package
  runc             # the OCI runtime every pod's containers run under
  umoci skopeo     # the image store: unpack OCI images, import docker/OCI archives
  busybox-static   # the built-in busybox image
  e2fsprogs        # mkfs.ext4: each PersistentVolume's disk image (essential on Debian; named for minimal images)
  python3-venv python3-pip
)

need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "netlab: this step installs Debian packages and needs root; run it with sudo" >&2
    exit 1
  fi
}

missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  need_root
  echo "netlab: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
stamp=.venv/.netlab-installed
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if [ ! -f "$stamp" ] || [ setup.cfg -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "netlab: installing the Python dependencies into .venv"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e '.[dev]'
  touch "$stamp"
fi
