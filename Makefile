# README.md: `make demo` runs the main job, `make test` the whole suite on both tested stacks
# (what CI runs). Each stack's virtualenv is made on first use by tools/setup_env.sh:
#   pinned   ./.venv          requirements.txt          (torch 2.13)
#   classic  ./.venv-classic  requirements-classic.txt  (Python 3.10, torch 2.1.2, mmcv 2.1.0)
PY := .venv/bin/python
PY_CLASSIC := .venv-classic/bin/python

.PHONY: env env-classic demo test test-pinned test-classic
env:
	@tools/setup_env.sh

env-classic:
	@EXPEDITE_STACK=classic tools/setup_env.sh

demo: env
	$(PY) tools/demo.py

test: test-pinned test-classic

test-pinned: env
	$(PY) -m pytest -q

test-classic: env-classic
	$(PY_CLASSIC) -m pytest -q
