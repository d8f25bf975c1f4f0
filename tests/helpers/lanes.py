"""What differs between the two tested stacks (README, "Two tested stacks"), for tests:
skip markers whose reason names the torch version a feature needs.

Imported as a plain module (conftest puts tests/ on sys.path), like tests/helpers/naive.py.
"""
import pytest
import torch

from expedite_mm.compat import (DYNAMO_ONNX_EXPORTER, DYNAMO_ONNX_EXPORTER_MIN,
                                      FULLGRAPH_COMPILE, FULLGRAPH_COMPILE_MIN,
                                      SAFE_GLOBALS_API)

needs_fullgraph_compile = pytest.mark.skipif(
    not FULLGRAPH_COMPILE,
    reason=f"the operators compile into one graph (no graph break) from torch "
           f"{FULLGRAPH_COMPILE_MIN}; torch {torch.__version__}'s dynamo compiles them with "
           f"graph breaks (test_deploy.py::test_compile_with_graph_breaks_gives_eager_numbers)")

needs_dynamo_onnx_exporter = pytest.mark.skipif(
    not DYNAMO_ONNX_EXPORTER,
    reason=f"torch.onnx.export(dynamo=True) needs torch >= {DYNAMO_ONNX_EXPORTER_MIN} with "
           f"onnxscript; torch {torch.__version__} exports with the TorchScript exporter")

needs_safe_globals_api = pytest.mark.skipif(
    not SAFE_GLOBALS_API,
    reason=f"torch.serialization.safe_globals/get_safe_globals need torch >= 2.6; torch "
           f"{torch.__version__} loads through expedite-mm's restricted unpickler")


def torch_allow_list():
    """torch's process-wide weights_only allow-list, or () where torch has none to widen."""
    return list(torch.serialization.get_safe_globals()) if SAFE_GLOBALS_API else []
