# The two commands a new machine needs: `make run` (the main job on the embedded sidecar) and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: front install run lint test test-fast test-postgresql test-long bench bench-scale sidecar screenshots clean fuzz \
	chaos load

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The experimental Go gRPC front (`moorage sidecar --front go`, front/): grpc-go from the Go module proxy, the
# binary beside the venv's python, where the sidecar looks for it.
GO ?= $(shell command -v go || echo /usr/local/go/bin/go)
front: $(STAMP)
	cd front && GOFLAGS=-buildvcs=false $(GO) build -o ../$(BIN)/moorage-front .

run: $(STAMP)
	$(BIN)/python -m moorage.demo

sidecar: $(STAMP)
	$(BIN)/moorage sidecar

# The long-conversation test runs 400 turns here (summaries and archive pages included); `make test-long` runs
# the 2,000-turn form (about 6 minutes), which CI adds.
# The suite mostly waits (on servers, timers, leases), so it runs in TEST_WORKERS pytest-xdist workers, each taking a
# whole test file at a time, the files marked long first (module fixtures start once; tests/kit/shared.py
# serialises shared builds). TEST_WORKERS=0 runs it in this one process.
TEST_WORKERS ?= 3
PYTEST_PARALLEL := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)
test: $(STAMP) lint
	bash scripts/test-deps.sh
	PATH="$$PATH:/usr/local/go/bin" MOORAGE_LONG_TURNS=400 $(BIN)/python -m pytest -q -ra $(PYTEST_PARALLEL)

test-long: $(STAMP)
	MOORAGE_LONG_TURNS=2000 $(BIN)/python -m pytest -q -ra tests/agents/test_agent_long_conversation.py

# The sidecar, agent and gateway end-to-end suites again, every sidecar on a PostgreSQL database (make test runs
# them on SQLite, plus the PostgreSQL store's own tests: replicas, outage, copy). CI runs both.
test-postgresql: $(STAMP)
	bash scripts/test-deps.sh
	MOORAGE_TEST_STORE=postgresql MOORAGE_LONG_TURNS=400 $(BIN)/python -m pytest -q -ra $(PYTEST_PARALLEL) \
		tests/sidecar tests/agents tests/gateway

# Guard rails: ruff (lint + format) over the package, bench/ and tests/, mypy over the package and bench/ (and the
# tests/kit modules bench/ imports); `make test` runs them first.
lint: $(STAMP)
	$(BIN)/ruff check moorage bench tests
	$(BIN)/ruff format --check moorage bench tests
	$(BIN)/mypy

# The fast layer only (engine, store conformance, pure units; no server, no gRPC): seconds.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -ra -m "not e2e"

bench: $(STAMP)
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.agent_turns

# Scale (docs/benchmarks.md, "Scale through gRPC"): throughput against store size, idle agent sessions, fan-out
# width and history length, with plots in docs/scale-*.png; SCALE_* knobs (see bench/scale_grpc.py) for bigger.
bench-scale: $(STAMP)
	$(BIN)/python -m bench.scale_grpc

# Reliability (docs/reliability.md): the full forms; `make test` runs short ones (tests/reliability/).
FUZZ_EXAMPLES ?= 500
FUZZ_SEED ?= 20261201
FUZZ_STORE ?= sqlite
fuzz: $(STAMP)
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) FUZZ_SEED=$(FUZZ_SEED) FUZZ_STORE=$(FUZZ_STORE) $(BIN)/python -m tests.reliability.fuzz

CHAOS_SECONDS ?= 200
CHAOS_SEED ?= 20261201
CHAOS_INSTANCES ?= 1000
CHAOS_STORE ?= sqlite
# CHAOS_DB_OUTAGES=1 (with CHAOS_STORE=postgresql): the driver also stops and starts the PostgreSQL server
CHAOS_DB_OUTAGES ?= 0
chaos: $(STAMP)
	CHAOS_SECONDS=$(CHAOS_SECONDS) CHAOS_SEED=$(CHAOS_SEED) CHAOS_INSTANCES=$(CHAOS_INSTANCES) \
		CHAOS_STORE=$(CHAOS_STORE) CHAOS_DB_OUTAGES=$(CHAOS_DB_OUTAGES) $(BIN)/python -m tests.reliability.chaos

# 200 authenticated clients for 60 s against one sidecar; the memory plot goes to docs/ (see docs/reliability.md).
LOAD_CLIENTS ?= 200
LOAD_SECONDS ?= 60
LOAD_SEED ?= 20261201
load: $(STAMP)
	LOAD_CLIENTS=$(LOAD_CLIENTS) LOAD_SECONDS=$(LOAD_SECONDS) LOAD_SEED=$(LOAD_SEED) \
		LOAD_PLOT=docs/reliability-load-memory.png $(BIN)/python -m tests.reliability.load

# Dashboard screenshots in docs/ (needs Debian's chromium and npm ci --prefix tests/dashboard/browser).
screenshots: $(STAMP)
	npm ci --prefix tests/dashboard/browser --no-audit --no-fund --loglevel=error
	$(BIN)/python tests/dashboard/screenshots.py docs

clean:
	rm -rf $(VENV) *.egg-info
