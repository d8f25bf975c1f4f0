#!/usr/bin/env bash
# Create (or reuse) a project virtualenv with one of the two tested stacks:
#   EXPEDITE_STACK=pinned  (default) ./.venv          python3, requirements.txt
#   EXPEDITE_STACK=classic           ./.venv-classic  Python 3.10, requirements-classic.txt
#                                     (torch 2.1.2 / mmcv 2.1.0: what most OpenMMLab users run)
# EXPEDITE_VENV overrides the folder, EXPEDITE_PYTHON the interpreter the venv is made from.
# Idempotent: a stamp holding the hash of the pins + setup.py makes reruns instant.
# mmcv has no wheels on PyPI for these torch builds, so it is compiled with its ops (9-14 min
# on 2 cores, once: pip caches the wheel, later builds take seconds).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
stack=${EXPEDITE_STACK:-pinned}
case $stack in
  pinned)
    pins=$root/requirements.txt
    venv=${EXPEDITE_VENV:-$root/.venv}
    base=${EXPEDITE_PYTHON:-python3}
    imports="mmcv.ops, mmseg, mmdet, mmpretrain, fvcore, onnx, onnxscript, onnxruntime, expedite_mm" ;;
  classic)
    pins=$root/requirements-classic.txt
    venv=${EXPEDITE_VENV:-$root/.venv-classic}
    base=${EXPEDITE_PYTHON:-}
    if [ -z "$base" ]; then   # python3.10 on PATH, else the one pyenv installed
      if command -v python3.10 >/dev/null 2>&1 && python3.10 -c "" 2>/dev/null; then
        base=python3.10
      else
        base=$(ls -d "$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"/versions/3.10.*/bin/python 2>/dev/null | sort -V | tail -n1)
      fi
    fi
    [ -n "$base" ] || { echo "[setup_env] the classic stack needs Python 3.10 (pyenv install 3.10, or EXPEDITE_PYTHON=...)" >&2; exit 1; }
    imports="mmcv.ops, mmseg, mmdet, mmpretrain, fvcore, onnx, onnxruntime, expedite_mm" ;;
  *) echo "[setup_env] EXPEDITE_STACK must be 'pinned' or 'classic', got '$stack'" >&2; exit 2 ;;
esac
stamp=$venv/.expedite-env
want=$(cat "$pins" "$root/setup.py" | sha256sum | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
echo "[setup_env] preparing $venv ($stack stack; the first run builds mmcv from source, later runs are instant)" >&2
[ -x "$venv/bin/python" ] || "$base" -m venv "$venv"
py=$venv/bin/python
pip() { "$py" -m pip install --disable-pip-version-check -q -c "$pins" "$@"; }
pin() { grep -E "^$1==" "$pins"; }
pip "$(pin torch)" "$(pin numpy)"
# mmcv 2.1.0's setup.py builds only with setuptools < 70 (the pinned lane's runtime one is
# newer, hence no -c; it comes back with the pins below)
"$py" -m pip install --disable-pip-version-check -q "setuptools<70" wheel ninja
MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-2} pip --no-build-isolation "$(pin mmcv)"
pip -r "$pins"
"$py" -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e "$root"
"$py" -c "import $imports" >/dev/null
echo "$want" > "$stamp"
echo "[setup_env] ready: $venv" >&2
