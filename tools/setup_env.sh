#!/usr/bin/env bash
# Create (or reuse) the project virtualenv with the pinned stack from requirements.txt.
# Idempotent: a stamp holding the hash of requirements.txt + setup.py makes reruns instant.
# mmcv has no wheels on PyPI for this torch, so it is compiled with its ops (~14 min on
# 2 cores, once: pip caches the wheel, later builds take seconds).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${EXPEDITE_VENV:-$root/.venv}
pins=$root/requirements.txt
stamp=$venv/.expedite-env
want=$(cat "$pins" "$root/setup.py" | sha256sum | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
echo "[setup_env] preparing $venv (first run builds mmcv from source; later runs are instant)" >&2
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
py=$venv/bin/python
pip() { "$py" -m pip install --disable-pip-version-check -q -c "$pins" "$@"; }
pin() { grep -E "^$1==" "$pins"; }
pip "$(pin torch)" "$(pin numpy)"
# mmcv 2.1.0's setup.py builds only with setuptools < 70 (not the pinned runtime one, hence no -c)
"$py" -m pip install --disable-pip-version-check -q "setuptools<70" wheel ninja
MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-2} pip --no-build-isolation "$(pin mmcv)"
pip -r "$pins"
"$py" -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e "$root"
"$py" -c "import mmcv.ops, mmseg, mmdet, mmpretrain, fvcore, onnx, onnxscript, onnxruntime, expedite_mm" >/dev/null
echo "$want" > "$stamp"
echo "[setup_env] ready: $venv" >&2
