# Every target creates .venv when it is missing (or when the dependency files changed), so a
# fresh clone needs nothing but python3 and make.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DATA_DIR ?= ../shared/data/mnist
MODEL_DIR ?= models

.PHONY: serve test container-test lint train train-dry-run fmt openapi bench bench-quick bench-read soak overload system-deps clean

$(STAMP): pyproject.toml client/pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[train,dev,bench]'
	# Apart, after: the client owns the `digits` command (a venv from before it had its own
	# distribution lost the command when the project was upgraded in the same call).
	$(PY) -m pip install --quiet -c constraints.txt -e ./client
	touch $(STAMP)

serve: $(STAMP)
	$(PY) -m service

test: $(STAMP)
	$(VENV)/bin/lint-imports
	DIGITS_DATA_DIR=$(DATA_DIR) $(PY) -m pytest

# The images built and run with a real container engine (docs/deploy.md, "Checked for
# real"): Docker where one answers, podman otherwise (docker/podman-host.sh installs and sets it
# up on Debian). FLAVOUR: the torch build of the images (cuda builds from PyPI alone).
# About 10 minutes from nothing (podman installed, images built), 3 with the images cached;
# 11 GB of image storage.
FLAVOUR ?= cuda
container-test: $(STAMP)
	bash docker/podman-host.sh
	DIGITS_DATA_DIR=$(DATA_DIR) DIGITS_CONTAINER_FLAVOUR=$(FLAVOUR) \
	  $(PY) -m pytest -m container --timeout 3600 tests/container

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

fmt: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

train: $(STAMP)
	$(PY) -m training train-all --data-dir $(DATA_DIR) --out $(MODEL_DIR)

train-dry-run: $(STAMP)
	$(PY) -m training train --arch lenet5 --data-dir $(DATA_DIR) --out /tmp/digits-dry-run --dry-run

# The load benchmark (BENCHMARKS.md): the service as a real process driven by wrk, on the
# realistic mix of what users send and on single images, beside a decode-only server, a naive
# server, LitServe and the HTTP ceiling. About 21 minutes; bench-quick about 5.
bench: $(STAMP)
	$(PY) -m benchmarks.load --output runs/bench.md --json runs/bench.json

bench-quick: $(STAMP)
	$(PY) -m benchmarks.load --quick

# Reading whole numbers (BENCHMARKS.md): exact-string and per-digit accuracy per kind and
# model on 200 numbers of MNIST test digits per kind (about 4 minutes), then /read's
# preprocessing time per kind and throughput against /predict on the same mix (about 2).
bench-read: $(STAMP)
	$(PY) -m benchmarks.read_accuracy --per-kind 200 --models default,lenet5
	$(PY) -m benchmarks.read_speed

# Promises under load, as real processes driven by wrk (BENCHMARKS.md): a 60 s soak (memory
# flat, no errors); the default settings on the realistic mix at 4x and 8x the sustainable
# load (only 200/503, accepted p99 bounded, memory in budget, recovery), reloads under load
# (no answer but 200), a short deadline (504 before the model), SIGTERM with 32 in flight.
soak: $(STAMP)
	$(PY) -m benchmarks.stress soak

overload: $(STAMP)
	$(PY) -m benchmarks.stress overload

openapi: $(STAMP)
	$(PY) -m service openapi > openapi.json

# Debian packages some tests drive for real: Chromium (the page, end to end), nginx (the
# scaled-out compose variant's config) and wrk (the benchmarks' load generator). Tests that
# need them skip, saying why, when absent.
SYSTEM_DEPS := chromium nginx wrk
system-deps:
	@missing=""; for p in $(SYSTEM_DEPS); do command -v $$p >/dev/null || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache
