"""expedite-mm: training-free token clustering/reconstruction for OpenMMLab ViT/Swin backbones."""
from setuptools import find_packages, setup

setup(
    name="expedite-mm",
    version="0.1.0",
    description=(
        "Expedite trained large vision transformers for dense prediction without "
        "fine-tuning (token clustering + reconstruction) as an MMSeg/MMDet plugin"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["expedite_mm", "expedite_mm.*"]),
    python_requires=">=3.8",
    # Only what the pure-torch operators need; the mm stack is used when installed
    # (see requirements.txt for the pinned, tested versions).
    install_requires=["torch>=1.12"],
    extras_require={
        "mm": ["mmcv>=2.0.0,<2.2.0", "mmengine>=0.10", "mmsegmentation>=1.2",
               "mmdet>=3.2", "mmpretrain>=1.2", "fvcore"],
        "tools": ["rich", "tqdm", "matplotlib", "scikit-image"],
        # ONNX export (torch's exporter needs onnxscript) and ONNX Runtime
        "deploy": ["onnx>=1.16", "onnxscript>=0.3", "onnxruntime>=1.18"],
        "test": ["pytest"],
    },
    license="Apache-2.0",
)
