"""Behaviour preserved: every shipped backbone family and reducer pair computes what it
computed when ``tests/golden/outputs.pt`` was recorded (``tests/helpers/golden_cases.py``).

Every case runs with ``golden_cases.THREADS`` threads. With the torch version and CPU
kernels of the recording the outputs must be bit-identical (equal sha256 digests of their
float64 bytes). Another torch version or CPU sums in other orders (BLAS and kernel
choices), so there the float32 copies are compared with a tolerance instead.
"""
import pytest
import torch

import golden_cases

RECORDED = torch.load(golden_cases.GOLDEN, weights_only=True)
# (a field the recording lacks is a different machine)
SAME_MACHINE = all(RECORDED.get(key) == value for key, value in golden_cases.machine().items())


def test_every_case_is_recorded():
    assert set(RECORDED["outputs"]) == set(golden_cases.CASES)
    assert RECORDED["dtype"] == str(golden_cases.DTYPE)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(golden_cases.CASES))
def test_outputs_are_unchanged(name):
    outputs = golden_cases.run_case(name)
    expected = RECORDED["outputs"][name]
    assert len(outputs) == len(expected)
    for i, (output, (digest, copy)) in enumerate(zip(outputs, expected)):
        assert output.dtype == golden_cases.DTYPE and output.shape == copy.shape, (i, output.shape)
        if SAME_MACHINE:
            assert golden_cases.digest(output) == digest, \
                (f"output {i} of {name} differs from the recording: largest difference "
                 f"{(output.float() - copy).abs().max().item():.3g}")
        else:
            torch.testing.assert_close(output.float(), copy, rtol=1e-4, atol=1e-5)
