# The README's two commands, plus lint. Everything runs in ./.venv with the CPU build of torch
# (requirements/cpu.txt pins it); GPU users install their own torch into the venv first.
PY ?= python3
VENV := .venv
PIP := $(VENV)/bin/pip install -q -c requirements/cpu.txt

.PHONY: demo test lint clean

$(VENV)/bin/python:
	$(PY) -m venv $(VENV)

demo: $(VENV)/bin/python
	$(PIP) -e .
	$(VENV)/bin/dni-launch --recipe launch/demo.toml --blocks 4 --gpus cpu --out runs/demo

test: $(VENV)/bin/python
	$(PIP) -e '.[dev]'
	$(VENV)/bin/python -m pytest

lint: $(VENV)/bin/python
	$(VENV)/bin/ruff check dni_dist tests tools
	$(VENV)/bin/mypy dni_dist

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
