"""The installable package: a wheel built from this tree carries the configs and tools
(mim-style, ``expedite_mm/.mim/{configs,tools}``) and the ``expedite-mm`` command; installed
(non-editable) into a fresh virtualenv layered on the test stack, it runs a tiny expedited
config from a user's project outside the source tree, whose ``_base_`` is one of the
shipped configs (``'expedite_mm::segmenter/...'``)."""
import glob
import json
import os
import os.path as osp
import re
import shutil
import site
import subprocess
import sys
import zipfile

import pytest
import yaml

from harness import ROOT, write_ade20k

SHIPPED = "segmenter/segmenter_vit-l_expedite-a10-28x28_ade20k-640x640.py"


def _run(command, cwd, env, timeout=900):
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}{result.stderr[-5000:]}"
    return result.stdout


def _repo_files(folder):
    return sorted(osp.relpath(p, osp.join(ROOT, folder))
                  for p in glob.glob(osp.join(ROOT, folder, "**", "*"), recursive=True)
                  if osp.isfile(p) and "__pycache__" not in p)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel, built from a copy of the tree (the checkout stays as it is)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "src"
    os.makedirs(source)
    for name in ("setup.py", "README.md", "LICENSE", "metafile.yml"):
        shutil.copy(osp.join(ROOT, name), source)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for folder in ("expedite_mm", "configs", "tools"):
        shutil.copytree(osp.join(ROOT, folder), source / folder, ignore=ignore)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
          "--no-index", "-w", str(tmp / "dist"), str(source)], tmp, dict(os.environ))
    (path,) = glob.glob(str(tmp / "dist" / "expedite_mm-*.whl"))
    return path


def test_wheel_ships_configs_tools_license_and_command(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names
                            if n.endswith(".dist-info/entry_points.txt"))
        metadata = next(archive.read(n).decode() for n in names
                        if n.endswith(".dist-info/METADATA"))
    for folder in ("configs", "tools"):
        shipped = sorted(n[len(f"expedite_mm/.mim/{folder}/"):] for n in names
                         if n.startswith(f"expedite_mm/.mim/{folder}/"))
        assert shipped == _repo_files(folder), folder
    assert "expedite_mm/.mim/model-index.yml" in names          # mmengine reads it first
    with zipfile.ZipFile(wheel) as archive:
        index = yaml.safe_load(archive.read("expedite_mm/.mim/model-index.yml"))
        shipped_zoo = archive.read("expedite_mm/.mim/metafile.yml")
    assert index == {"Import": ["metafile.yml"]}
    with open(osp.join(ROOT, "metafile.yml"), "rb") as f:
        assert shipped_zoo == f.read()
    assert any(n.endswith(".dist-info/LICENSE") or "/licenses/LICENSE" in n for n in names)
    assert "expedite-mm = expedite_mm.cli:main" in entry_points
    # the floors are the classic stack's versions (requirements-classic.txt)
    assert "Requires-Python: >=3.10" in metadata
    assert "Requires-Dist: torch>=2.1.2" in metadata
    assert re.search(r'Requires-Dist: mmcv[^\n]*2\.1\.0[^\n]*extra == "seg"', metadata)


@pytest.mark.slow
def test_installed_wheel_runs_a_users_config_outside_the_tree(wheel, tmp_path):
    # a virtualenv whose own site-packages holds only expedite-mm; the stack under test
    # (torch, mmcv, mmseg, ...) is reached through a .pth line (its .pth files, e.g. this
    # checkout's editable install, are not read from there)
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, dict(os.environ))
    python = str(venv / "bin" / "python")
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                   tmp_path, dict(os.environ)).strip()
    stack = [p for p in site.getsitepackages() if osp.isdir(p)]
    with open(osp.join(purelib, "_test_stack.pth"), "w") as f:
        f.write("\n".join(stack) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(OMP_NUM_THREADS="2", PYTHONNOUSERSITE="1")
    _run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel],
         tmp_path, env)

    project = tmp_path / "project"
    os.makedirs(project)
    data_root = write_ade20k(str(project / "ade"))
    (project / "my_segmenter.py").write_text(f"""
_base_ = 'expedite_mm::{SHIPPED}'
model = dict(
    backbone=dict(embed_dims=32, num_layers=4, num_heads=2, cluster_after=2,
                  cluster_grid=(28, 28), drop_path_rate=0.0),
    decode_head=dict(in_channels=32, channels=32, num_heads=2, embed_dims=32, num_layers=1))
test_dataloader = dict(num_workers=0, persistent_workers=False,
                       dataset=dict(data_root={data_root!r}))
""")
    # the package comes from the venv, not from this checkout; its config is inherited
    report = json.loads(_run([python, "-c", """
import json, torch
import expedite_mm
from expedite_mm.apis.config import build_model, load_config
cfg = load_config('my_segmenter.py')
model = build_model(cfg)
torch.save({'state_dict': model.state_dict()}, 'tiny.pth')
from mmengine.hub import get_config
# the installed model index: a shipped config's weights, from the metafile
weights = get_config('expedite_mm::{SHIPPED}', pretrained=True).model_path
print(json.dumps(dict(file=expedite_mm.__file__, backbone=type(model.backbone).__name__,
                      segmentor=type(model).__name__, base=cfg.filename, weights=weights)))
""".replace("{SHIPPED}", SHIPPED)], project, env).strip().splitlines()[-1])
    assert report["file"].startswith(str(venv)), report
    assert (report["backbone"], report["segmentor"]) == ("ExpeditedViT", "ExpeditedEncoderDecoder")
    with open(osp.join(ROOT, "metafile.yml")) as f:
        zoo = {m["Config"]: m["Weights"] for m in yaml.safe_load(f)["Models"]}
    assert report["weights"] == zoo[f"configs/{SHIPPED}"]

    command = str(venv / "bin" / "expedite-mm")
    listed = _run([command, "configs", "segmenter"], project, env).split()
    assert f"expedite_mm::{SHIPPED}" in listed
    log = _run([command, "test", "my_segmenter.py", "tiny.pth", "--work-dir", "work",
                "--metrics-json", "metrics.json"], project, env)
    metrics = json.loads((project / "metrics.json").read_text())
    assert 0 <= metrics["mIoU"] <= 100 and "mIoU" in log
    assert not osp.exists(osp.join(ROOT, "work"))              # ran in the user's project
