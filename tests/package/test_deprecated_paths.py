"""The import paths of 0.1 that moved (CHANGELOG, "Changed") keep working for one release:
each warns once with a DeprecationWarning naming the new home and gives the new module
itself, so every name -- private ones and monkeypatches included -- is the new one's."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from expedite_mm.utils import MOVED

SCRIPT = textwrap.dedent("""
    import importlib, json, sys, warnings
    from expedite_mm.utils import MOVED
    result = {}
    # the packages first: importing an old module imports its old package
    for package, names in (("expedite_mm.dpt", ("ExpeditedHybridViT", "KITTIDepthDataset",
                                                "MonoDepthMetric", "DPTDepthHead")),
                           ("expedite_mm.benchmark", ("DigitScenesDataset",))):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            module = importlib.import_module(package)
        result[package] = dict(names=all(hasattr(module, n) for n in names),
                               messages=[str(w.message) for w in caught
                                         if w.category is DeprecationWarning])
    for old, new in MOVED.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            module = importlib.import_module(old)
        messages = [str(w.message) for w in caught if w.category is DeprecationWarning]
        result[old] = dict(same=module is importlib.import_module(new),
                           aliased=sys.modules[old] is sys.modules[new], messages=messages)
    from expedite_mm.utils.config import as_expedited   # the documented 0.1 spelling
    from expedite_mm.apis.config import as_expedited as new
    result["from-import"] = as_expedited is new
    print(json.dumps(result))
""")


@pytest.fixture(scope="module")
def result():
    run = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_module_is_the_new_one_and_warns(result, old):
    entry = result[old]
    assert entry["same"] and entry["aliased"]
    assert any(old in m and MOVED[old] in m and "0.3" in m for m in entry["messages"]), entry


@pytest.mark.parametrize("package", ["expedite_mm.dpt", "expedite_mm.benchmark"])
def test_old_packages_reexport_and_warn(result, package):
    assert result[package]["names"]
    assert any(package in m for m in result[package]["messages"]), result[package]


def test_documented_from_import_still_works(result):
    assert result["from-import"] is True
