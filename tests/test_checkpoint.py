"""Safe loading of official-format checkpoints on torch >= 2.6."""
import os

import numpy as np
import pytest
import torch
from mmengine.logging.history_buffer import HistoryBuffer

from expedite_mm.utils.checkpoint import (UntrustedCheckpointError, checkpoint_policy,
                                          load_checkpoint_file)


class NotAllowed:
    """Stands for any class a malicious or foreign checkpoint could pickle."""

    def __init__(self):
        self.value = 3


def _official_like(tmp_path):
    buffer = HistoryBuffer()
    buffer.update(0.5)
    buffer.update(0.25)
    ckpt = {
        "meta": {"mmseg_version": "1.2.2", "epoch": np.int64(160),
                 "seed": np.uint32(7), "lr": np.float64(1e-3),
                 "dataset_meta": {"palette": np.arange(12, dtype=np.uint8).reshape(4, 3)}},
        "state_dict": {"backbone.weight": torch.randn(3, 3)},
        "message_hub": {"log_scalars": {"train/loss": buffer},
                        "runtime_info": {"iter": 160000, "grad": np.ones(3, np.float32)}},
    }
    path = tmp_path / "official.pth"
    torch.save(ckpt, path)
    return path, ckpt


def test_official_format_loads_with_weights_only(tmp_path):
    path, ckpt = _official_like(tmp_path)
    assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in os.environ
    loaded = load_checkpoint_file(str(path))
    assert torch.equal(loaded["state_dict"]["backbone.weight"], ckpt["state_dict"]["backbone.weight"])
    assert loaded["meta"]["epoch"] == 160
    np.testing.assert_array_equal(loaded["meta"]["dataset_meta"]["palette"],
                                  ckpt["meta"]["dataset_meta"]["palette"])
    history = loaded["message_hub"]["log_scalars"]["train/loss"]
    assert isinstance(history, HistoryBuffer) and history.mean() == pytest.approx(0.375)
    # mmengine's own loader (used by Runner/load_from) loads it too, weights_only=True
    from mmengine.runner.checkpoint import _load_checkpoint
    with checkpoint_policy():
        assert _load_checkpoint(str(path), map_location="cpu")["meta"]["seed"] == 7


def test_foreign_objects_are_refused_with_a_clear_message(tmp_path):
    path = tmp_path / "foreign.pth"
    torch.save({"state_dict": {}, "meta": {"thing": NotAllowed()}}, path)
    with pytest.raises(UntrustedCheckpointError) as error:
        load_checkpoint_file(str(path))
    message = str(error.value)
    assert "NotAllowed" in message and "--trust-checkpoint" in message and str(path) in message


def test_trust_opt_in_loads_and_is_scoped(tmp_path):
    path = tmp_path / "foreign.pth"
    torch.save({"meta": {"thing": NotAllowed()}}, path)
    loaded = load_checkpoint_file(str(path), trust=True)
    assert loaded["meta"]["thing"].value == 3
    assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in os.environ   # only inside the load
    with pytest.raises(UntrustedCheckpointError):
        load_checkpoint_file(str(path))


def test_getattr_is_only_allowed_for_history_buffer_statistics(tmp_path):
    """The allow-list maps builtins.getattr to a guard: a file using getattr to reach
    anything else (the classic route from an allowed class to code) is refused."""
    class Exploit:
        def __reduce__(self):
            return getattr, (HistoryBuffer, "__init__")

    path = tmp_path / "exploit.pth"
    torch.save({"meta": Exploit()}, path)
    with pytest.raises(UntrustedCheckpointError, match="getattr"):
        load_checkpoint_file(str(path))
