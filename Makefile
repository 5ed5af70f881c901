# The two commands of the README: `make run` and `make test`. Each sets up what it needs.
# `make bench` runs the benchmark (bench/README.md); `make bench ARGS=--quick` for a short one.
# `make install` (root) installs a release the systemd unit can trust: a venv under $(PREFIX)
# from the wheel, the unit and logrotate; `make uninstall` removes it (scripts/install.sh).
# Recipes are silent (@) and set-up talks on stderr: `make run | jq` sees only events.
.PHONY: run test setup setup-test unit bench wheel install uninstall

PREFIX ?= /opt/ebpfguard
BINDIR ?= /usr/local/bin
UNITDIR ?= /etc/systemd/system
LOGROTATEDIR ?= /etc/logrotate.d
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
WHEEL := dist/ebpfguard-$(VERSION)-py3-none-any.whl

run: setup
	@.venv/bin/ebpfguard run $(ARGS)

test: setup-test
	@.venv/bin/python -m pytest -ra $(ARGS)

unit: setup-test
	@.venv/bin/python -m pytest -ra tests/unit $(ARGS)

setup:
	@scripts/setup.sh >&2

setup-test:
	@scripts/setup.sh --test >&2

bench: setup
	@bench/setup.sh
	@.venv/bin/python -m bench.run $(ARGS)

# The wheel carries the probes (bpf/ as ebpfguard.bpf), the rules and the default config.
# build/ goes first: setuptools would pack a module deleted since from a stale build/lib.
wheel: setup
	@rm -rf build $(WHEEL)
	@.venv/bin/pip wheel -q --no-deps --no-build-isolation --disable-pip-version-check -w dist . >&2

install: wheel
	@PREFIX=$(PREFIX) BINDIR=$(BINDIR) UNITDIR=$(UNITDIR) LOGROTATEDIR=$(LOGROTATEDIR) \
		scripts/install.sh install $(WHEEL)

uninstall:
	@PREFIX=$(PREFIX) scripts/install.sh uninstall
