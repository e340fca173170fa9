# The README's two commands, plus lint. Everything runs in ./.venv with the CPU build of torch
# (requirements/cpu.txt pins it); GPU users install their own torch into the venv first.
PY ?= python3
VENV := .venv
PIP := $(VENV)/bin/pip install -q -c requirements/cpu.txt

.PHONY: demo test lint clean cluster cluster-gpu cluster-down dashboard

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

# The compose cluster (needs a Docker engine): 4 blocks, rendezvous, Prometheus, Grafana.
cluster:
	docker build -f docker/Dockerfile -t dni_dist:cpu .
	docker-compose -f deploy/docker-compose.yml up

cluster-gpu:
	docker build -f docker/Dockerfile -t dni_dist:cuda --build-arg BASE=nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04 --build-arg TORCH=cuda .
	docker-compose -f deploy/docker-compose.yml -f deploy/docker-compose.gpu.yml up

cluster-down:
	docker-compose -f deploy/docker-compose.yml down

# Regenerate deploy/grafana/dashboards/dni.json after editing tools/make_dashboard.py.
dashboard:
	$(VENV)/bin/python tools/make_dashboard.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
