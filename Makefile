# Two commands do everything on a fresh machine:
#   make run    set up .venv and run the main job
#   make test   set up .venv and run the whole test suite
# Both are idempotent: the environment is rebuilt only when pyproject.toml changes.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# Tested versions; on the dev machines these wheels come from local disk.
TORCH  := torch==2.14.1 torchvision==0.29.1
EXTRAS := dev
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha1sum | cut -c1-12)-$(EXTRAS)

.PHONY: run test setup bench list clean-venv

setup: $(STAMP)

$(STAMP):
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	rm -f $(VENV)/.installed-*
	touch $@

# The main job. Until the DVC pipeline exists (data/train stages), this runs the part
# of stylecore that exists: it lists the registries and evaluates every loss on
# generated images with a seeded random encoder, writing reports/losses.json.
run: $(STAMP)
	$(VENV)/bin/stylecore list
	$(VENV)/bin/stylecore check-losses --output reports/losses.json

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) bench/bench_losses.py

clean-venv:
	rm -rf $(VENV)
