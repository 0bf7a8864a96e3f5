# The two commands a newcomer runs: `make conformance` and `make test`.
# Both create the virtual environment when it is missing.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: conformance test check venv wheels proto bench repeat mutants clean

# The three parts of the repository, installed editable: the wire contract,
# the reference daemon and the suite (see pyproject.toml).
$(STAMP): pyproject.toml proto/pyproject.toml reference_server/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ./proto -e ./reference_server -e '.[dev]'
	touch $(STAMP)

REFERENCE_DAEMON := $(CURDIR)/$(VENV)/bin/choo-ref daemon --socket {socket} --db {db}

## The suite against the reference implementation: in process, over a real
## socket (with the control service, in the reference profile), and black-box
## over a socket (the daemon as an unmodified implementation would run it).
## Each writes its report in conformance-report/.
conformance: $(STAMP)
	@status=0; \
	$(VENV)/bin/choo-conformance --report conformance-report/in-process || status=1; \
	echo; \
	$(VENV)/bin/choo-conformance --report conformance-report/daemon --profile reference \
		--server-cmd '$(REFERENCE_DAEMON) --conformance-control' || status=1; \
	echo; \
	$(VENV)/bin/choo-conformance --report conformance-report/black-box \
		--server-cmd '$(REFERENCE_DAEMON)' || status=1; \
	exit $$status

## Every test: the checks, then unit, property, stress, crash, the feature
## files, the runner, and the suite installed from its wheels.
test: check
	$(PY) -m pytest -q

## The linter, the type checker, and the layering contract (pyproject.toml).
check: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

## The three wheels (choo-proto, choo-conformance, choo-reference) in dist/.
wheels: $(STAMP)
	rm -rf dist
	$(PY) -m pip wheel --quiet --no-deps --no-build-isolation -w dist ./proto ./reference_server .

## Only create the virtual environment (for running choo-ref by hand).
venv: $(STAMP)

## Regenerate the protobuf code from proto/ (a test fails when it drifts).
proto: $(STAMP)
	$(PY) tools/genproto.py

## Every mutant of tests/mutants/catalogue.py on both paths: fails when the
## suite lets one survive (docs/SUITE_POWER.md).
mutants: $(STAMP)
	PYTHONPATH=$(CURDIR) $(PY) -m tests.mutants

## The feature files 50 times in a row: the flakiness check.
repeat: $(STAMP)
	$(PY) -m pytest steps/choo_conformance/scenarios -q -p no:randomly --count=50

clean:
	rm -rf $(VENV) conformance-report report.json dist build

## The performance targets (docs/PERFORMANCE.md) against the reference daemon and the plain-grpcio
## ceiling: prints the table, writes bench/results/ (docs/PERFORMANCE.md).
bench: $(STAMP)
	$(PY) -c 'import matplotlib' 2>/dev/null || $(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m bench.run
