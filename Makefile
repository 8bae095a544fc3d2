# The two commands of the README: `make dev` starts everything, `make test` runs every check.
VENV ?= .venv
BIN = $(VENV)/bin
STAMP = $(VENV)/.installed

.PHONY: dev test lint bench chromium

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

dev: $(STAMP)
	$(BIN)/chronos dev

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# The dashboard's browser tests drive Debian's Chromium (never a browser Playwright downloads): installed
# when missing and possible (root with apt-get); otherwise tests/test_dashboard_browser.py is skipped.
chromium:
	@command -v chromium >/dev/null 2>&1 \
	|| { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	     && { apt-get install -y -q chromium >/dev/null 2>&1 \
	          || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; }; }; } \
	|| echo "make: Chromium is missing and cannot be installed here: the browser tests will be skipped"

# Two workers, each with its own Temporal server and databases, one test file at a time (a file's tests
# keep their order): the suite's waiting on Temporal and peers overlaps on the machine's two cores. Files are
# handed out in collection order, which tests/conftest.py starts with the longest (`SLOWEST_FIRST`), so no
# long file starts last and runs alone.
test: lint chromium
	$(BIN)/pytest -n 2 --dist loadfile --no-loadscope-reorder

# Every speed target at full size (10,000 schedules, 1,000 runs in flight), Chronos beside bare Temporal on
# one dev server each; about 40 minutes on 2 cores.
bench: $(STAMP)
	$(BIN)/python -m bench.throughput
	$(BIN)/python -m bench.throughput --in-memory
	$(BIN)/python -m bench.lateness --live 10000 --settle 300 --in-flight 1000
	$(BIN)/python -m bench.lateness --in-memory --once 1000 --spread --apart
	$(BIN)/python -m bench.schedules -n 10000
	$(BIN)/python -m bench.api_latency --seconds 5
	$(BIN)/python -m bench.workers
	$(BIN)/python -m bench.eventloop
