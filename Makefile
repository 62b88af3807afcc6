# The two commands a new user runs: `make run` and `make test`. Everything else is optional.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EMBEDDED := $(BIN)/python -m config.embedded with --

.PHONY: run test install check pytest lint format bench busy-day fuzz down messages clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

## make run: everything (web + websockets on :8000, worker, beat) with demo data
run: install
	$(BIN)/python -m config.run

## make test: guard rails, then the whole suite
test: export SECRET_KEY ?= parley-tests-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz
test: install
	$(EMBEDDED) $(MAKE) --no-print-directory check pytest

check:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python manage.py makemigrations --check --dry-run
	DEBUG=false SECRET_KEY=check-deploy-$$(head -c 48 /dev/urandom | od -An -tx1 | tr -d ' \n') \
	  ALLOWED_HOSTS=parley.example.com $(BIN)/python manage.py check --deploy --fail-level WARNING

pytest:
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

bench: install
	$(EMBEDDED) $(BIN)/python -m bench

## make busy-day: the issue's whole busy day (10 minutes, ~12 with setting up; `make bench` runs one minute)
busy-day: install
	$(EMBEDDED) $(BIN)/python -m bench.busy_day --minutes 10 --workers 4 $(BENCH_ARGS)

## make fuzz: the fuzzers with a real budget, random rather than CI's fixed examples (docs/security.md):
## FUZZ_EXAMPLES mutated payloads per connector parser, FUZZ_API_EXAMPLES requests per API operation
fuzz: export SECRET_KEY ?= parley-tests-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz
fuzz: export FUZZ_EXAMPLES ?= 5000
fuzz: export FUZZ_API_EXAMPLES ?= 200
fuzz: install
	$(EMBEDDED) $(BIN)/python -m pytest -q -W ignore::hypothesis.errors.HypothesisWarning \
	  tests/trust/test_fuzz_parsers.py tests/api/test_schema_fuzz.py $(PYTEST_ARGS)

## make down: stop embedded servers left running by manage.py commands
down: install
	$(BIN)/python -m config.embedded down

## make messages: recompile the translations after editing locale/*/LC_MESSAGES/django.po
messages: install
	$(BIN)/python -m config.i18n

clean: down
	rm -rf $(VENV) var
