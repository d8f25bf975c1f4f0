"""expedite-mm: training-free token clustering/reconstruction for OpenMMLab ViT/Swin backbones.

The version ranges are the two tested stacks (README, "Two tested stacks"): the classic
lane (requirements-classic.txt: Python 3.10, torch 2.1.2, mmcv 2.1.0) is the floor, the
pinned lane (requirements.txt: torch 2.13) the newest tested; the OpenMMLab packages are
the same versions on both. Wheels carry the configs and tools, mim-style, under
``expedite_mm/.mim/`` (mmengine's ``'expedite_mm::<folder>/<config>.py'`` bases and the
``expedite-mm`` command read them there).
"""
import os
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = os.path.dirname(os.path.abspath(__file__))
MIM_FOLDERS = ("configs", "tools")   # shipped as expedite_mm/.mim/<folder>

OPENMMLAB = ["mmcv>=2.1.0,<2.2.0", "mmengine>=0.10.7,<0.11"]
EXTRAS = {
    # each optional part of the package, named in the error raised when it is missing
    "seg": OPENMMLAB + ["mmsegmentation>=1.2.2,<1.3", "ftfy>=6.3.1", "regex>=2024.11.6"],
    "det": OPENMMLAB + ["mmdet>=3.3.0,<3.4"],
    "pretrain": OPENMMLAB + ["mmpretrain>=1.2.0,<1.3"],
    "flops": ["fvcore>=0.1.5.post20221221"],
    # ONNX export and ONNX Runtime; onnxscript runs torch's dynamo exporter (torch >= 2.5)
    "deploy": ["onnx>=1.17.0", "onnxruntime>=1.19.2", "onnxscript>=0.7.2"],
    "tools": ["rich>=13.9.4", "tqdm>=4.67.1", "matplotlib>=3.9.2", "scikit-image>=0.24.0"],
    "test": ["pytest>=8.3.4"],
}
EXTRAS["mm"] = sorted(set(EXTRAS["seg"] + EXTRAS["det"] + EXTRAS["pretrain"] + EXTRAS["flops"]))
EXTRAS["all"] = sorted(set(sum(EXTRAS.values(), [])))


class BuildWithMim(build_py):
    """build_py that also copies configs/ and tools/ into expedite_mm/.mim/ of the build
    (as mmseg/mmdet ship theirs); the source tree is left as it is.

    The model zoo's ``metafile.yml`` goes along and ``.mim/model-index.yml`` imports it:
    mmengine's ``hub.get_config('expedite_mm::<folder>/<config>.py', pretrained=True)``
    then finds a config's weights (``cfg.model_path``, the metafile's ``Weights``).
    ``_base_ = 'expedite_mm::...'`` bases are read from ``.mim/configs/`` directly."""

    def run(self):
        super().run()
        mim = os.path.join(self.build_lib, "expedite_mm", ".mim")
        for folder in MIM_FOLDERS:
            target = os.path.join(mim, folder)
            if os.path.isdir(target):
                shutil.rmtree(target)
            shutil.copytree(os.path.join(ROOT, folder), target,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        shutil.copy(os.path.join(ROOT, "metafile.yml"), mim)
        with open(os.path.join(mim, "model-index.yml"), "w") as f:
            f.write("Import:\n- metafile.yml\n")


setup(
    name="expedite-mm",
    version="0.1.0",
    description=(
        "Expedite trained large vision transformers for dense prediction without "
        "fine-tuning (token clustering + reconstruction) as an MMSeg/MMDet plugin"
    ),
    long_description=open(os.path.join(ROOT, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["expedite_mm", "expedite_mm.*"]),
    cmdclass={"build_py": BuildWithMim},
    python_requires=">=3.10",
    # what the pure-torch operators need; the OpenMMLab parts are extras
    install_requires=["torch>=2.1.2", "numpy>=1.26.4,<2"],
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["expedite-mm = expedite_mm.cli:main"]},
    license="Apache-2.0",
    license_files=["LICENSE"],
    classifiers=[
        "License :: OSI Approved :: Apache Software License",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
