# Two commands set everything up on a fresh machine (Python 3.11 and pip):
#   make run    start minibroker (port 5673) and minilog (port 9093), data in ./data
#   make test   run the whole test suite
#   make stop   stop the servers `make run` started (from another terminal; same RUN_ARGS)
# Each creates .venv and installs the package with its extras when needed.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RUN_ARGS ?=
PYTEST_ARGS ?=

.PHONY: run stop test test-deep test-rabbitmq test-tansu bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

# RUN_ARGS takes any flag of either server (see serverbase/launcher.py and the README).
run: $(VENV)/.installed
	$(PY) -m serverbase.launcher $(RUN_ARGS)

stop: $(VENV)/.installed
	$(PY) -m serverbase.launcher stop $(RUN_ARGS)

test: $(VENV)/.installed
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The longer, deeper hypothesis profile, on demand.
test-deep: $(VENV)/.installed
	HYPOTHESIS_PROFILE=deep $(PY) -m pytest -q $(PYTEST_ARGS)

# The differential runs: the whole-broker models against a real RabbitMQ / tansu that
# brokertest/peers.py starts on loopback (one "skipped:" line and success when not installed).
# HYPOTHESIS_PROFILE=deep makes them long.
test-rabbitmq: $(VENV)/.installed
	$(PY) -m brokertest.peers rabbitmq -- $(PY) -m pytest -q -rs $(PYTEST_ARGS) tests/brokertest/test_whole_broker_queue_model.py -k rabbitmq

test-tansu: $(VENV)/.installed
	$(PY) -m brokertest.peers tansu -- $(PY) -m pytest -q -rs $(PYTEST_ARGS) tests/brokertest/test_whole_broker_log_model.py -k another

bench: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m bench list

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
