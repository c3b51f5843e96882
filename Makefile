# The two commands a newcomer needs: `make run` and `make test`. Everything else is here too.
UV ?= uv
PYTEST_ARGS ?=

.PHONY: help install run test test-unit faults lint format bench schemas clean

help:
	@echo "make run     bring up Kafka, PostgreSQL and the three services, show them working"
	@echo "make test    run the whole test suite against a real Kafka and PostgreSQL"
	@echo "make faults  kill and restart the broker, the database and the services under load"
	@echo "make lint    format check, lint, type check"
	@echo "make bench   benchmarks; results and plots in bench-results/"

install:
	@command -v $(UV) >/dev/null || python3 -m pip install --quiet uv
	$(UV) sync --frozen --quiet

run: install
	$(UV) run python -m punchcard.demo

test: install
	$(UV) run pytest $(PYTEST_ARGS)

test-unit: install
	$(UV) run pytest tests/unit $(PYTEST_ARGS)

# Broker and database restarts, kills, rebalances and freezes under load (about 10 minutes).
faults: install
	PUNCHCARD_FAULTS=1 $(UV) run pytest tests/faults $(PYTEST_ARGS)

lint: install
	$(UV) run ruff format --check .
	$(UV) run ruff check .
	$(UV) run mypy
	UV=$(UV) bash deploy/lint/check.sh

format: install
	$(UV) run ruff format .
	$(UV) run ruff check --fix .

schemas: install
	$(UV) run python -m punchcard_contract.schemas
	$(UV) run python -m punchcard_coupon_query.openapi

bench: install
	$(UV) run python -m bench

clean:
	rm -rf bench-results .pytest_cache .mypy_cache .ruff_cache .hypothesis
