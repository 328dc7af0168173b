# twinloop: one-command set-up, demo, tests, benchmarks, lint.
# `make demo` and `make test` install first, so each works on a fresh machine by itself.

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.twinloop-installed
PYENV_ROOT ?= $(shell pyenv root 2>/dev/null || echo $(HOME)/.pyenv)
# Python 3.12: from PATH first, then pyenv's 3.12.1.
PYTHON312 ?= $(shell command -v python3.12 >/dev/null 2>&1 && python3.12 -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null && command -v python3.12 || echo $(PYENV_ROOT)/versions/3.12.1/bin/python3.12)
APT_PACKAGES := ffmpeg iproute2
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export MUJOCO_GL ?= egl
export HF_HUB_OFFLINE := 1
# Never put the working directory on sys.path: the top-level `datasets/` folder would shadow
# Hugging Face `datasets` (lerobot's dependency) in every `python -m` started from the repo root.
export PYTHONSAFEPATH := 1

.PHONY: install demo test bench lint clean help

help:
	@echo "make install  venv + pinned dependencies + apt packages (idempotent)"
	@echo "make demo     run the closed loop on the embedded MuJoCo twin and print the success rate"
	@echo "make test     run the test suite (unit + multi-process ROS graph tests)"
	@echo "make bench    benchmarks -> benchmarks/out/bench.json + bench.md"
	@echo "make lint     ruff"

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml ros_ws/src/twinloop_ros/setup.py
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "apt: installing$$missing"; \
	  $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q $$missing; fi
	@test -x "$(PYTHON312)" || { echo "error: Python 3.12 not found (PATH or $(PYENV_ROOT)/versions/3.12.1)"; exit 1; }
	@test -x $(PY) || $(PYTHON312) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 2>&1 | sed "/is ignored/d"
	$(PY) -m pip install -q -r requirements.txt 2>&1 | sed "/is ignored/d"
	$(PY) -m pip install -q --no-deps -e . 2>&1 | sed "/is ignored/d"
	$(PY) -c "import rclpy, mujoco, lerobot, twinloop.sim, twinloop_ros; print('twinloop installed:', 'rclpy', 'mujoco', mujoco.__version__)"
	@touch $(STAMP)

demo: install
	$(VENV)/bin/twinloop launch sim_pick

test: install
	$(VENV)/bin/pytest -q tests

bench: install
	$(VENV)/bin/twinloop bench

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) benchmarks/out outputs .pytest_cache .ruff_cache
