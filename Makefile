# The README's commands. Everything a fresh Debian/Ubuntu machine lacks is installed here.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# util-linux: `unshare` runs PostgreSQL as non-root when we are root (stack/postgres.py).
APT_PACKAGES := ffmpeg samba smbclient fuse3 chromium default-jre-headless util-linux
# Not in Debian: Google's Cloud SDK repository ships the Firestore emulator.
FIRESTORE_PACKAGE := google-cloud-cli-firestore-emulator
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=

.PHONY: dev test reliability bench bench-quick bench-live reliability lint check-defs setup system-packages venv clean

dev: setup  ## start the local stack and `dagster dev` on 127.0.0.1:3000 (Ctrl-C stops all)
	$(BIN)/hybrid-pipelines dev

dev-platform: setup  ## make dev with the platform simulated (its tables verbatim + a writer)
	HP_STACK_PLATFORM=1 $(BIN)/hybrid-pipelines dev

test: setup  ## the test suite against real servers (reliability suite: make reliability)
	$(BIN)/python -m pytest --ignore=hybrid_pipelines_tests/reliability --ignore=hybrid_pipelines_tests/containers $(PYTEST_ARGS)

reliability: setup  ## real faults, load, hostile input, secrets; ends with the fault ledger
	$(BIN)/python -m pytest hybrid_pipelines_tests/reliability $(PYTEST_ARGS)

bench: setup  ## every benchmark, one table (writes bench/results.json)
	$(BIN)/python bench/run_all.py

bench-quick: setup
	$(BIN)/python bench/run_all.py --quick

bench-live: setup  ## the daemon benches (idle, latency, priority sync): a dev stack each
	$(BIN)/python bench/run_all.py --live --timeout 2400

check-defs: setup  ## dg's own check that every definition under hybrid_pipelines/defs loads
	VIRTUAL_ENV=$(abspath $(VENV)) $(BIN)/dg check defs

lint: setup
	$(BIN)/ruff check hybrid_pipelines hybrid_pipelines_tests bench

setup: system-packages venv

system-packages:
	@missing=""; \
	for pkg in $(APT_PACKAGES); do dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing system packages:$$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@dpkg -s $(FIRESTORE_PACKAGE) >/dev/null 2>&1 || echo "NOTE: the Firestore emulator is not \
	installed: its tests skip (and fail under CI=true) and the stack runs without it. Install \
	$(FIRESTORE_PACKAGE) from Google's Cloud SDK apt repository \
	(suite cloud-sdk), e.g. sudo apt-get install $(FIRESTORE_PACKAGE)." >&2

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	[ -x $(BIN)/python ] || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

clean:
	-$(BIN)/hybrid-pipelines stack down
	rm -rf $(VENV) .pytest_cache .ruff_cache

# --- The container flavour (deploy/containers, issue #16): podman here, Docker elsewhere ---
# catatonit: podman's pause process for `podman kube play` pods.
CONTAINER_PACKAGES := podman runc debootstrap podman-compose catatonit

.PHONY: containers-packages containers-image containers-up containers-down containers-test

containers-packages:
	@missing=""; \
	for pkg in $(CONTAINER_PACKAGES); do dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing container packages:$$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null \
		|| { echo "ERROR: cannot install$$missing (needed to run containers): install them with apt-get" >&2; exit 1; }; \
	fi

containers-image: containers-packages setup  ## the images (Debian base, wheelhouse, project, servers)
	bash deploy/containers/build-images.sh

containers-up: containers-packages setup  ## the stack in containers on 127.0.0.1:9400.. (keeps volumes)
	bash deploy/containers/up.sh

containers-down:  ## remove the stack's containers (volumes stay)
	bash deploy/containers/down.sh

containers-test: containers-packages setup  ## images + stack + a container per run + kube play, then down
	bash deploy/containers/test.sh
