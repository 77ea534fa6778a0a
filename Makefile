# The few targets a contributor needs. `make test` is the one CI runs.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

.PHONY: install system-deps test lint typecheck bench protos serve local clean

install:
	$(PIP) install -e '.[test]'

# Debian's redis-server, redis-tools and prometheus: the suite starts real Redis
# servers, a Redis Cluster and a Prometheus. Installs them when missing (as root,
# with apt-get); quiet otherwise.
system-deps:
	sh tools/ensure_system_deps.sh

test: system-deps install
	$(PYTHON) -m ruff check .
	$(PYTHON) -m mypy engine
	$(PYTHON) -m pytest

lint:
	$(PYTHON) -m ruff check .

typecheck:
	$(PYTHON) -m mypy engine

bench:
	inventory-engine bench core --json
	inventory-engine bench grpc --json
	inventory-engine bench promise --json
	inventory-engine bench redis --json
	inventory-engine bench flash-sale --json

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
