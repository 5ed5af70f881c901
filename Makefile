# The two commands of the README: `make run` and `make test`. Each sets up what it needs.
# `make bench` runs the benchmark (bench/README.md); `make bench ARGS=--quick` for a short one.
.PHONY: run test setup setup-test unit bench

run: setup
	.venv/bin/ebpfguard run $(ARGS)

test: setup-test
	.venv/bin/python -m pytest -ra $(ARGS)

unit: setup-test
	.venv/bin/python -m pytest -ra tests/unit $(ARGS)

setup:
	@scripts/setup.sh

setup-test:
	@scripts/setup.sh --test

bench: setup
	@bench/setup.sh
	.venv/bin/python -m bench.run $(ARGS)
