import os
import sys

import pytest
import torch

# tests/naive.py (the independent re-derivations) is imported as a plain module.
sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
