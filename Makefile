# bgagent — the two commands a newcomer needs:
#   make demo   run one task end to end on this machine (real NATS, local PostgreSQL, scripted model)
#   make test   lint, type-check and run every test (unit, integration, end to end)
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
PY_DIRS := libs services cli tests bench conftest.py

.PHONY: help bootstrap sync postgres sandbox-tools demo test check lint fmt unit bench clean

help:
	@echo "make demo    run one task end to end (starts nats-server + the four services, exits 0 on COMPLETED)"
	@echo "make test    ruff + mypy + import rules, then every test (needs PostgreSQL; starts it if it is down)"
	@echo "make bench   print the benchmark figures (rebuild throughput, watch latency NATS and SSE, redaction, policy evaluation, sandbox, cancel, fanout coalescing, token revocation, recovery from lost runners)"

# uv from PyPI when the machine has none (kept in .tools/, nothing installed globally).
$(UV):
	python3 -m venv .tools && .tools/bin/pip install --quiet uv

bootstrap: $(UV)

sync: bootstrap
	$(UV) sync --all-packages --locked --quiet

# Start the machine's PostgreSQL if it is installed but down (no-op elsewhere: set DATABASE_URL).
postgres:
	@if [ -z "$$DATABASE_URL" ] && command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1; then \
		echo "starting the local PostgreSQL"; \
		pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | head -1) main start || true; \
		for i in $$(seq 1 30); do pg_isready -q -h 127.0.0.1 && break; sleep 0.5; done; \
	fi

# Agent commands run under bubblewrap; install it when missing (Debian; make runs as root here).
sandbox-tools:
	@command -v bwrap >/dev/null || (echo "installing bubblewrap (the agent sandbox)" && \
		apt-get update -qq && apt-get install -y -qq bubblewrap)

demo: sync postgres sandbox-tools
	$(UV) run bgagent demo

check: sync
	$(UV) run ruff check $(PY_DIRS)
	$(UV) run ruff format --check $(PY_DIRS)
	$(UV) run mypy libs/*/src services/*/src cli/src
	$(UV) run lint-imports

test: check postgres sandbox-tools
	$(UV) run pytest -q

unit: sync sandbox-tools
	$(UV) run pytest -q -m "not integration and not e2e"

fmt: sync
	$(UV) run ruff format $(PY_DIRS)
	$(UV) run ruff check --fix $(PY_DIRS)

bench: sync postgres sandbox-tools
	$(UV) run python bench/rebuild_throughput.py
	$(UV) run python bench/watch_latency.py
	$(UV) run python bench/sse_latency.py
	$(UV) run python bench/redaction.py
	$(UV) run python bench/policy_eval.py
	$(UV) run python bench/sandbox_overhead.py
	$(UV) run python bench/cancel_latency.py
	$(UV) run python bench/approval_roundtrip.py
	$(UV) run python bench/fanout_coalescing.py
	$(UV) run python bench/token_revocation.py
	$(UV) run python bench/recovery.py

clean:
	rm -rf .tools .venv .mypy_cache .ruff_cache .pytest_cache
