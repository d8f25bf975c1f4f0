"""``expedite-mm``: the shipped tools from an installed package (what ``mim test`` and
``python tools/X.py`` do for a checkout).

    expedite-mm expedite STOCK_CONFIG [...]        tools/expedite.py
    expedite-mm test CONFIG CHECKPOINT [...]       tools/test.py
    expedite-mm flops CONFIG [...]                 tools/analysis/get_flops.py
    expedite-mm benchmark CONFIG [...]             tools/analysis/benchmark.py
    expedite-mm autotune CONFIG CHECKPOINT [...]   tools/analysis/autotune.py
    expedite-mm configs [FOLDER]                   list the shipped configs

CONFIG may be a path or ``expedite_mm::<folder>/<config>.py`` (a config shipped with the
package, as in ``_base_``). The tools run from ``expedite_mm/.mim/tools`` of an installed
package, or from ``tools/`` of a source checkout.
"""
from __future__ import annotations

import os
import os.path as osp
import runpy
import sys
from typing import Dict, List, Optional

PACKAGE_DIR = osp.dirname(osp.abspath(__file__))
PREFIX = "expedite_mm::"

TOOLS: Dict[str, str] = {
    "test": "test.py",
    "expedite": "expedite.py",
    "demo": "demo.py",
    "flops": "analysis/get_flops.py",
    "benchmark": "analysis/benchmark.py",
    "ops-benchmark": "analysis/ops_benchmark.py",
    "sweep": "analysis/sweep.py",
    "token-fidelity": "analysis/token_fidelity.py",
    "backbone-fidelity": "analysis/backbone_fidelity.py",
    "autotune": "analysis/autotune.py",
    "zoo-coverage": "analysis/zoo_coverage.py",
    "tie-rule": "analysis/tie_rule.py",
    "train": "train.py",
    "digit-scenes": "dataset_converters/digit_scenes.py",
    "publish-checkpoint": "model_converters/publish_checkpoint.py",
    "onnx": "deployment/pytorch2onnx.py",
    "sam-predictor": "sam_predictor.py",
    "convert-segmenter": "model_converters/segmenter2mmseg.py",
    "convert-dpt": "model_converters/dpt2mmseg.py",
    "convert-swag": "model_converters/swag2mmpretrain.py",
}


def shipped(folder: str) -> str:
    """Where ``configs`` or ``tools`` are: ``expedite_mm/.mim/<folder>`` of an installed
    package, else ``<folder>`` of the source checkout this package is in."""
    for candidate in (osp.join(PACKAGE_DIR, ".mim", folder),
                      osp.join(osp.dirname(PACKAGE_DIR), folder)):
        if osp.isdir(candidate):
            return candidate
    raise FileNotFoundError(f"expedite-mm's {folder}/ is neither in {PACKAGE_DIR}/.mim nor "
                            f"in a source checkout around it")


def resolve_config(name: str) -> str:
    """``expedite_mm::<folder>/<config>.py`` -> its path; anything else unchanged."""
    if not name.startswith(PREFIX):
        return name
    path = osp.join(shipped("configs"), name[len(PREFIX):])
    if not osp.isfile(path):
        raise FileNotFoundError(f"no config {name} (looked for {path}); "
                                f"`expedite-mm configs` lists them")
    return path


def _usage() -> str:
    names = "\n".join(f"  {name:<18} tools/{path}" for name, path in TOOLS.items())
    return (f"usage: expedite-mm COMMAND [ARGS...]\n\ncommands (ARGS as the tool takes them; "
            f"COMMAND --help for each):\n{names}\n  {'configs':<18} list the shipped "
            f"configs (optionally of one folder)\n")


def main(argv: Optional[List[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return
    command, args = argv[0], argv[1:]
    if command == "configs":
        root = shipped("configs")
        for folder, _, files in sorted(os.walk(root)):
            relative = osp.relpath(folder, root)
            if args and relative.split(os.sep)[0] not in args:
                continue
            for name in sorted(f for f in files if f.endswith(".py")):
                print(PREFIX + osp.join(relative, name).replace(os.sep, "/"))
        return
    if command not in TOOLS:
        sys.exit(f"expedite-mm: unknown command {command!r}\n\n{_usage()}")
    import expedite_mm  # noqa: F401  (registration and expedite_mm:: bases before any config)
    tool = osp.join(shipped("tools"), TOOLS[command])
    args = [resolve_config(arg) if arg.startswith(PREFIX) else arg for arg in args]
    saved = sys.argv
    sys.argv = [tool, *args]
    try:
        runpy.run_path(tool, run_name="__main__")
    finally:
        sys.argv = saved


if __name__ == "__main__":
    main()
