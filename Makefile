# README.md: `make demo` runs the main job, `make test` the whole suite on both tested stacks
# (what CI runs). Each stack's virtualenv is made on first use by tools/setup_env.sh:
#   pinned   ./.venv          requirements.txt          (torch 2.13)
#   classic  ./.venv-classic  requirements-classic.txt  (Python 3.10, torch 2.1.2, mmcv 2.1.0)
PY := .venv/bin/python
PY_CLASSIC := .venv-classic/bin/python

# Two pytest-xdist workers: most tests run on one thread, so one process leaves a core idle
# (measured: 50 % busy); a test file stays on one worker, so its module fixtures are built once.
PYTEST := -m pytest -q -n 2 --dist loadfile

.PHONY: env env-classic envs demo test test-pinned test-classic test-fast
env:
	@tools/setup_env.sh

env-classic:
	@EXPEDITE_STACK=classic tools/setup_env.sh

demo: env
	$(PY) tools/demo.py

# Both stacks are built first, side by side (one downloads while the other compiles mmcv),
# then tested one after the other.
envs:
	@$(MAKE) --no-print-directory -j2 env env-classic

test: envs
	$(PY) $(PYTEST)
	$(PY_CLASSIC) $(PYTEST)

test-pinned: env
	$(PY) $(PYTEST)

test-classic: env-classic
	$(PY_CLASSIC) $(PYTEST)

# The edit loop: the pinned stack without the end-to-end runs and full-size FLOP counts
# (slow), the build of every shipped config (tests/configs) and the command lines
# (tests/tools); make test runs them all
test-fast: env
	$(PY) $(PYTEST) -m "not slow" --ignore=tests/configs --ignore=tests/tools
