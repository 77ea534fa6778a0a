# The few targets a contributor needs. `make test` is the one CI runs.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

.PHONY: install system-deps test lint typecheck bench perf-report protos serve local clean loadtest-smoke

install:
	$(PIP) install -e '.[test]'

# Debian's redis-server, redis-tools, prometheus and postgresql: the suite starts
# real Redis servers, a Redis Cluster, a Prometheus and a PostgreSQL. Installs
# them when missing (as root, with apt-get); quiet otherwise.
system-deps:
	sh tools/ensure_system_deps.sh

test: system-deps install
	$(PYTHON) -m ruff check .
	$(PYTHON) -m mypy engine loadtests
	$(PYTHON) -m pytest
	$(PYTHON) -m loadtests.smoke --out $(LOADTEST_OUT)

lint:
	$(PYTHON) -m ruff check .

typecheck:
	$(PYTHON) -m mypy engine loadtests

bench:
	inventory-engine bench core --json
	inventory-engine bench grpc --json
	inventory-engine bench promise --json
	inventory-engine bench redis --json
	inventory-engine bench flash-sale --json

# docs/PERFORMANCE.md and its plots (docs/perf/): every benchmark plus the
# PostgreSQL row-lock baseline in one run, about 15-20 minutes on 2 cores.
# A check of the pipeline in a few minutes, leaving docs/ alone:
#   python -m engine.bench.report --quick --out /tmp/perf/PERFORMANCE.md
PERF_ARGS ?=
perf-report: system-deps
	$(PIP) install -q -e '.[bench]'
	$(PYTHON) -m engine.bench.report --out docs/PERFORMANCE.md $(PERF_ARGS)

# Locust against engines it starts itself: flash sale, then omnichannel day,
# 15 s each, each ending with `inventory-engine audit` and the run-level check
# (loadtests/README.md). CSV/HTML reports and journals go to $(LOADTEST_OUT).
LOADTEST_OUT ?= build/loadtest
loadtest-smoke:
	$(PYTHON) -m loadtests.smoke --out $(LOADTEST_OUT)

protos:
	$(PYTHON) tools/gen_protos.py

serve:
	inventory-engine serve --demo

# Redis Cluster + engine workers with the demo data + Prometheus, on loopback,
# until Ctrl-C (deploy/local/README.md). `make local WORKERS=4`.
WORKERS ?= 2
local:
	sh deploy/local/run --workers $(WORKERS)

clean:
	rm -rf build *.egg-info engine/_fast/*.c engine/_fast/*.so
