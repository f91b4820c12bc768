# The chatmail relay appliance. `make up` runs it, `make test` tests it.
SHELL := /bin/bash
DOCKER ?= $(shell [ -x /usr/bin/docker ] && echo /usr/bin/docker || echo docker)
COMPOSE ?= $(shell command -v docker-compose >/dev/null && echo docker-compose || echo "docker compose")
IMAGE ?= chatmail-relay:latest
BASE_IMAGE ?= debian:bookworm-slim
DOVECOT ?= patched
ENV_FILE := $(if $(wildcard .env),.env,examples/local.env)
VENV ?= .venv
PYTEST ?= $(VENV)/bin/pytest
export DOCKER IMAGE

ARM64_BASE ?= chatmail-base-arm64:bookworm-slim
ARM64_IMAGE ?= chatmail-relay:arm64

.PHONY: help base-image image up down logs status test test-unit lint venv clean docs bench bench-scale \
        image-arm64 test-arm64

help:
	@echo "make up          build what is missing and start the relay (.env, or a local test relay)"
	@echo "make down        stop it (the data volume stays)"
	@echo "make logs        follow every service's log"
	@echo "make test        the whole test suite against the real image"
	@echo "make test-unit   linters, type checker and the pure Python tests (seconds, no Docker)"
	@echo "make bench       latency, memory, size and start-up figures -> bench/results.json"
	@echo "make bench-scale 10,000 IMAP clients in IDLE (N=..., HIBERNATE=s): memory per client, latency"
	@echo "make image       build $(IMAGE);  make base-image: $(BASE_IMAGE) via debootstrap if needed"

base-image:
	DOCKER=$(DOCKER) sh image/base/build-base.sh $(BASE_IMAGE)

image: base-image
	$(DOCKER) build -f image/Dockerfile --build-arg BASE_IMAGE=$(BASE_IMAGE) --build-arg DOVECOT=$(DOVECOT) -t $(IMAGE) .

# arm64 on an amd64 host through qemu-user-static and binfmt (apt-get install
# qemu-user-static binfmt-support). Slow (the Dovecot builder stage compiles under
# emulation); not part of `make test`.
image-arm64:
	@[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || { echo "no arm64 emulation: apt-get install qemu-user-static binfmt-support"; exit 1; }
	PULL_FROM=$(BASE_IMAGE) DOCKER=$(DOCKER) sh image/base/build-base.sh $(ARM64_BASE) arm64
	$(DOCKER) build --cpu-shares 256 -f image/Dockerfile --build-arg BASE_IMAGE=$(ARM64_BASE) \
	    --build-arg DEB_CFLAGS_APPEND=-fno-lto --build-arg DEB_CXXFLAGS_APPEND=-fno-lto \
	    --build-arg DEB_LDFLAGS_APPEND=-fno-lto \
	    --build-arg DOVECOT=$(DOVECOT) -t $(ARM64_IMAGE) .

test-arm64: venv  ## the smoke tests against the arm64 image, under emulation
	IMAGE=$(ARM64_IMAGE) SMOKE_ARCH=arm64 SMOKE_TIMEOUT=600 $(PYTEST) tests/smoke

up: image
	@[ -f .env ] || echo "no .env: starting a local test relay from examples/local.env"
	$(COMPOSE) --env-file $(ENV_FILE) up -d
	@echo "waiting for the relay to become healthy..."
	@for i in $$(seq 90); do \
	  s=$$($(DOCKER) inspect -f '{{.State.Health.Status}}' $$($(COMPOSE) --env-file $(ENV_FILE) ps -q relay) 2>/dev/null); \
	  [ "$$s" = healthy ] && { echo "relay is healthy"; exit 0; }; sleep 1; done; \
	  echo "relay did not become healthy; see: make logs"; exit 1

down:
	$(COMPOSE) --env-file $(ENV_FILE) down

logs:
	$(COMPOSE) --env-file $(ENV_FILE) logs -f

# `exec -T`: relayctl needs no terminal, and without one (scripts, CI) a plain `exec`
# fails with "the input device is not a TTY".
status:
	$(COMPOSE) --env-file $(ENV_FILE) exec -T relay relayctl status

$(VENV)/.installed: tests/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q -r tests/requirements.txt
	touch $@

venv: $(VENV)/.installed

lint: venv  ## ruff (pyflakes, import order, bugbear, pyupgrade) and mypy on relay/
	$(VENV)/bin/ruff check --config tests/ruff.toml relay entrypoint.py bench
	$(VENV)/bin/ruff check --config tests/ruff.toml --select F,E9 tests
	$(VENV)/bin/mypy --config-file tests/mypy.ini

test-unit: lint
	$(PYTEST) tests/unit

test: lint image
	$(PYTEST) tests

bench: venv image  ## measurements, written to bench/results.json (not part of make test)
	$(MAKE) image DOVECOT=stock IMAGE=chatmail-relay:stock
	$(VENV)/bin/python bench/run.py

bench-scale: venv image  ## the scale step with N=10000 IMAP clients in IDLE (bench/scale.py; HIBERNATE=seconds for another IMAP_HIBERNATE_TIMEOUT)
	$(VENV)/bin/python bench/scale.py $(or $(N),10000) $(HIBERNATE)

docs:  ## regenerate the README settings table and compose.yaml's environment from relay/settings/ (and compose.host.yaml from compose.yaml)
	python3 -m relay.settings --write-docs .

clean:
	rm -rf $(VENV) .pytest_cache
