# The two commands of the README: `make serve` and `make test`.
.PHONY: serve test bootstrap bench

POOL ?= deploy/pools/cpu-default.yaml
PORT ?= 8000

bootstrap:
	@bash scripts/bootstrap.sh

serve: bootstrap
	.venv/bin/tiergate serve --pool $(POOL) --port $(PORT)

test: bootstrap
	.venv/bin/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench: bootstrap
	.venv/bin/python loadtests/bench_gateway_overhead.py
