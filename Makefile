# Two commands (README.md): `make demo` runs the main job, `make test` the whole suite.
# Both create ./.venv with the pinned stack (requirements.txt) on first use.
PY := .venv/bin/python

.PHONY: env demo test
env:
	@tools/setup_env.sh

demo: env
	$(PY) tools/demo.py

test: env
	$(PY) -m pytest -q
