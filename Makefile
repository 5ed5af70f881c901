# The two commands of the README: `make run` and `make test`. Each sets up what it needs.
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
