# The few targets a contributor needs. `make test` is the one CI runs.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

.PHONY: install test lint typecheck bench protos serve clean

install:
	$(PIP) install -e '.[test]'

test: install
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

protos:
	$(PYTHON) tools/gen_protos.py

serve:
	inventory-engine serve --demo

clean:
	rm -rf build *.egg-info engine/_fast/*.c engine/_fast/*.so
