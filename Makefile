# The two commands a newcomer runs: `make conformance` and `make test`.
# Both create the virtual environment when it is missing.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: conformance test check venv wheels proto bench repeat mutants explore foreign clean interop interop-tools interop-proto

# The three parts of the repository, installed editable: the wire contract,
# the reference daemon and the suite (see pyproject.toml). On a fresh clone,
# every second here is one `make test` waits for (docs/PERFORMANCE.md):
# - the environment is made without the pip it would bundle, and the
#   machine's pip installs a current one into it (--python; a pip too old
#   for that falls back to the bundled one): a current pip installs the rest
#   twice as fast, and the bundled one would be installed only to be replaced;
# - the one setuptools installed here builds the three, not a fresh build
#   environment each;
# - nothing is compiled to bytecode at install: Python compiles a module the
#   first time it is imported, and most of what is installed never is.
PIP_AND_SETUPTOOLS := install --quiet --no-compile --upgrade pip 'setuptools>=68'
$(STAMP): pyproject.toml proto/pyproject.toml reference_server/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv --without-pip $(VENV)
	$(PYTHON) -m pip --python $(PY) $(PIP_AND_SETUPTOOLS) \
		|| { $(PY) -m ensurepip --upgrade >/dev/null && $(PY) -m pip $(PIP_AND_SETUPTOOLS); }
	$(PY) -m pip install --quiet --no-compile --no-build-isolation \
		-e ./proto -e ./reference_server -e '.[dev]'
	touch $(STAMP)

# The tests and runs start hundreds of Python processes: each should read
# the bytecode compiled once (make test compiles it first; pytest keeps its
# rewritten test modules) rather than compile the same modules again, even
# where the environment asks Python not to write bytecode.
unexport PYTHONDONTWRITEBYTECODE

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
## files, the runner, the suite installed from its wheels, a sample of the
## mutants and of the foreign daemon's runs (all of them: make mutants, make
## foreign), spread over TEST_WORKERS processes (which tests share one, and
## which go first: conftest.py). Four, even on two cores: some tests mostly
## wait out deadlines, and the others use the cores meanwhile.
TEST_WORKERS ?= 4
# Where Go is installed, the interop tools build meanwhile on the core that
# pip and the checks leave idle (tests/test_interop.py builds them itself,
# and says why it cannot, when this did not).
test:
	@if command -v $(GO) >/dev/null 2>&1; then \
		$(MAKE) -s --no-print-directory interop-tools >/dev/null 2>&1 & \
	fi; \
	$(MAKE) --no-print-directory check; status=$$?; wait; exit $$status
	$(PY) -m compileall -q proto/choo reference_server/choo_reference steps tests conftest.py
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadscope

## The linter, the type checker, and the layering contract (pyproject.toml).
check: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

## The three wheels (choo-proto, choo-conformance, choo-reference) in dist/.
wheels: $(STAMP)
	rm -rf dist
	$(PY) -m pip wheel --quiet --no-deps --no-build-isolation -w dist ./proto ./reference_server .
	rm -rf build proto/build reference_server/build

## Only create the virtual environment (for running choo-ref by hand).
venv: $(STAMP)

## Regenerate the protobuf code from proto/ (a test fails when it drifts).
proto: $(STAMP)
	$(PY) tools/genproto.py

## Every mutant of tests/mutants/catalogue.py on both paths: fails when the
## suite lets one survive (docs/SUITE_POWER.md).
mutants: $(STAMP)
	PYTHONPATH=$(CURDIR) $(PY) -m tests.mutants $(ARGS)

## The explorer (choo-conformance --explore): every test of
## tests/test_explorer.py (make test runs the short ones), then the explorer
## alone against each daemon mutant of the catalogue for a minute each, with
## the table of what it finds (docs/SUITE_POWER.md): about 20 minutes on 2
## cores, so not part of make mutants or CI.
EXPLORE_S ?= 60
explore: $(STAMP)
	CHOO_EXPLORE_TESTS=all $(PY) -m pytest -q -p no:randomly tests/test_explorer.py
	PYTHONPATH=$(CURDIR) $(PY) -m tests.mutants --explore $(EXPLORE_S) $(ARGS)

## The suite against the foreign daemon (tests/foreign_daemon/), every run:
## make test's, and the volume scenarios in both profiles with the defect
## that only they catch (about 3 CPU-minutes; tests/test_foreign_daemon.py).
foreign: $(STAMP)
	CHOO_FOREIGN_RUNS=all $(PY) -m pytest -q tests/test_foreign_daemon.py

## The feature files 50 times in a row: the flakiness check. -c: the repository's
## configuration (and so its conftest.py), not the suite package's own pytest.ini.
COUNT ?= 50
repeat: $(STAMP)
	$(PY) -m pytest -c pyproject.toml steps/choo_conformance/scenarios -q -p no:randomly --count=$(COUNT)

clean:
	rm -rf $(VENV) conformance-report report.json dist build interop/bin

## The performance targets (docs/PERFORMANCE.md) against the reference daemon and the plain-grpcio
## ceiling: prints the table, writes bench/results/ (docs/PERFORMANCE.md).
bench: $(STAMP)
	$(PY) -c 'import matplotlib' 2>/dev/null || $(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m bench.run $(ARGS)

# -- interop: real gRPC tools against the daemon ---------------------------------
# Off-the-shelf tools from the Go module proxy, at pinned versions, installed
# into interop/bin/ (git-ignored), and the grpc-go client of interop/.
GO ?= go
INTEROP_BIN := interop/bin
GRPCURL := github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4
HEALTH_PROBE := github.com/grpc-ecosystem/grpc-health-probe@v0.4.62
# The same protobuf and grpc releases interop/go.mod requires.
PROTOC_GEN_GO := google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_GRPC := google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
INTEROP_TOOLS := $(GRPCURL) $(HEALTH_PROBE) $(PROTOC_GEN_GO) $(PROTOC_GEN_GO_GRPC)

# One stamp per module@version: changing a pin reinstalls that tool.
tool_stamp = $(INTEROP_BIN)/.installed/$(subst /,_,$(1))
define install_tool
$(call tool_stamp,$(1)):
	mkdir -p $(INTEROP_BIN)/.installed
	GOBIN=$(CURDIR)/$(INTEROP_BIN) $(GO) install $(1)
	touch $$@
endef
$(foreach tool,$(INTEROP_TOOLS),$(eval $(call install_tool,$(tool))))

INTEROP_SOURCES := interop/go.mod interop/go.sum $(wildcard interop/*.go) \
	$(wildcard interop/gen/choo/v1/*.go interop/gen/choo/conformance/v1/*.go)
$(INTEROP_BIN)/choo-interop: $(INTEROP_SOURCES)
	cd interop && $(GO) build -buildvcs=false -o bin/choo-interop .

## Install grpcurl, grpc-health-probe and the Go code generators, and build
## the grpc-go client (once; again when a pin or a source changes).
interop-tools: $(foreach tool,$(INTEROP_TOOLS),$(call tool_stamp,$(tool))) $(INTEROP_BIN)/choo-interop

## grpcurl, grpc-health-probe and the grpc-go client against the reference
## daemon (tests/test_interop.py); here a missing Go or proxy fails, not skips.
interop: $(STAMP) interop-tools
	CHOO_INTEROP_REQUIRED=1 $(PY) -m pytest -q tests/test_interop.py

## Regenerate interop/gen/ (the Go stubs) from proto/; a test fails on drift.
interop-proto: $(STAMP) $(call tool_stamp,$(PROTOC_GEN_GO)) $(call tool_stamp,$(PROTOC_GEN_GO_GRPC))
	$(PY) tools/gengo.py
