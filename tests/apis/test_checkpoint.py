"""Safe loading of official-format checkpoints on both tested stacks (torch >= 2.6: torch's
weights_only unpickler with a scoped allow-list; torch 2.1: our restricted unpickler with the
same list): the allow-list (scoped, complete in a fresh process), refusals and corrupt
files, loading into a model."""
import json
import os
import pickle
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from lanes import torch_allow_list
from mmengine.logging.history_buffer import HistoryBuffer

from expedite_mm.compat import checkpoint_schemes
from expedite_mm.apis.checkpoint import (CheckpointError, CheckpointMismatchError,
                                          CorruptCheckpointError, UntrustedCheckpointError,
                                          checkpoint_policy, load_checkpoint_file,
                                          load_state_dict_checked)


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


# --------------------------------------------------------------------------- scoped, not global
def test_loading_leaves_torch_and_mmengine_as_they_were(tmp_path):
    path, _ = _official_like(tmp_path)
    allowed, schemes = torch_allow_list(), dict(checkpoint_schemes())
    load_checkpoint_file(str(path))
    with pytest.raises(UntrustedCheckpointError):
        with checkpoint_policy():
            torch.load(_foreign(tmp_path), weights_only=True)
    assert torch_allow_list() == allowed
    assert dict(checkpoint_schemes()) == schemes
    assert all(loader.__module__ == "mmengine.runner.checkpoint" for loader in schemes.values())
    with pytest.raises(pickle.UnpicklingError):                    # HistoryBuffer outside it
        torch.load(path, weights_only=True)


def _foreign(tmp_path):
    path = tmp_path / "foreign.pth"
    torch.save({"state_dict": {}, "meta": {"thing": NotAllowed()}}, path)
    return path


class RunsCode:
    """A pickle whose loading runs a command: it creates a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_refusal_keeps_torchs_reason_and_runs_nothing(tmp_path):
    marker, path = tmp_path / "ran", tmp_path / "payload.pth"
    torch.save({"state_dict": {}, "meta": RunsCode(marker)}, path)
    with pytest.raises(UntrustedCheckpointError) as error:
        load_checkpoint_file(str(path))
    message = str(error.value)
    assert f"{os.system.__module__}.system" in message and "blocked" in message   # torch's reason
    assert str(path) in message and "--trust-checkpoint" in message
    assert not marker.exists()


@pytest.mark.parametrize("content", [
    random.Random(0).randbytes(4096),                         # random bytes
    b"<html><body>404 Not Found</body></html>\n",             # an error page saved as .pth
    b"not a checkpoint\n" * 20,
    "truncated",
], ids=["random-bytes", "html-page", "text", "truncated"])   # ids: the same in every worker
@pytest.mark.parametrize("trust", [False, True])
def test_unreadable_files_are_reported_as_corrupt_not_untrusted(tmp_path, content, trust):
    path = tmp_path / "broken.pth"
    if content == "truncated":
        torch.save({"state_dict": {"w": torch.ones(1000)}}, path)
        content = path.read_bytes()[:2000]
    path.write_bytes(content)
    with pytest.raises(CorruptCheckpointError) as error:
        load_checkpoint_file(str(path), trust=trust)
    message = str(error.value)
    assert str(path) in message and "--trust-checkpoint" not in message
    assert not isinstance(error.value, UntrustedCheckpointError)


def test_empty_file_names_its_path(tmp_path):
    path = tmp_path / "empty.pth"
    path.write_bytes(b"")
    with pytest.raises(CorruptCheckpointError, match=rf"{path}.* empty \(0 bytes\)"):
        load_checkpoint_file(str(path))
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_checkpoint_file(str(tmp_path / "missing.pth"))


def test_environment_override_is_refused_unless_trusted(tmp_path, monkeypatch):
    marker, path = tmp_path / "ran", tmp_path / "payload.pth"
    torch.save({"meta": RunsCode(marker)}, path)
    official, _ = _official_like(tmp_path)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    for checkpoint in (path, official):         # refused before anything is unpickled
        with pytest.raises(CheckpointError, match="TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1.*"
                                                  "--trust-checkpoint"):
            load_checkpoint_file(str(checkpoint))
    assert not marker.exists()
    assert load_checkpoint_file(str(official), trust=True)["meta"]["epoch"] == 160


FRESH_PROCESS_LOAD = """
import json, sys, torch
import expedite_mm
from mmengine.logging.history_buffer import HistoryBuffer
from expedite_mm.apis.checkpoint import load_checkpoint_file, safe_globals
from expedite_mm.compat import SAFE_GLOBALS_API
allowed = lambda: torch.serialization.get_safe_globals() if SAFE_GLOBALS_API else []
ours = lambda: len([g for g in safe_globals() if g in allowed()])
report = dict(widened_by_import=ours(), registered_before=len(HistoryBuffer._statistics_methods))
checkpoint = load_checkpoint_file(sys.argv[1])
loss = checkpoint["message_hub"]["log_scalars"]["train/loss"]
report.update(type=type(loss).__name__, mean=float(loss.mean()), min=float(loss.statistics("min")),
              miou=float(checkpoint["message_hub"]["log_scalars"]["val/mIoU"].current()),
              iter=checkpoint["message_hub"]["runtime_info"]["iter"],
              widened_after=ours())
print(json.dumps(report))
"""


def test_mmengine_training_checkpoint_loads_in_a_fresh_process(tmp_path):
    """What mmengine's Runner saves (a MessageHub state with HistoryBuffers, numpy metrics)
    loads in a process that has never built a HistoryBuffer; importing expedite_mm widens
    nothing."""
    from mmengine.logging import MessageHub
    hub = MessageHub.get_instance("test_fresh_process")
    for loss in (0.5, 0.25, 0.75):
        hub.update_scalar("train/loss", loss)
    hub.update_scalar("val/mIoU", np.float64(41.5))
    hub.update_info("iter", 3)
    path = tmp_path / "iter_3.pth"
    torch.save({"meta": {"seed": np.int64(1), "mmengine_version": "0.10.7",
                         "dataset_meta": {"classes": ("sky", "road"), "palette": [[1, 2, 3]]}},
                "state_dict": {"w": torch.ones(2)}, "message_hub": hub.state_dict()}, path)
    done = subprocess.run([sys.executable, "-c", FRESH_PROCESS_LOAD, str(path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == dict(widened_by_import=0, registered_before=0, type="HistoryBuffer",
                          mean=pytest.approx(0.5), min=0.25, miou=41.5, iter=3, widened_after=0)


# --------------------------------------------------------------------------- into a model
class Tiny(torch.nn.Module):
    """Two layers, a BatchNorm and a buffer its own load hook drops from the checkpoint
    (as mmpretrain's SwinV2 does with its position tables: it rebuilds them)."""

    def __init__(self, width=4):
        super().__init__()
        self.fc = torch.nn.Linear(width, width)
        self.bn = torch.nn.BatchNorm1d(width)
        self.register_buffer("table", torch.arange(width, dtype=torch.float32))
        self._register_load_state_dict_pre_hook(self._drop_table)

    @staticmethod
    def _drop_table(state_dict, prefix, *args):
        state_dict.pop(prefix + "table", None)


def test_checked_load_names_missing_unexpected_and_mismatched_keys():
    source = Tiny().state_dict()
    good = Tiny()
    report = load_state_dict_checked(good, {"state_dict": {"module." + k: v for k, v in
                                                           source.items()}})
    assert report == {"missing": [], "unexpected": [], "mismatched": []}
    assert torch.equal(good.fc.weight, source["fc.weight"])

    broken = {k: v for k, v in source.items() if k not in ("fc.bias", "bn.num_batches_tracked")}
    broken["extra.weight"] = torch.zeros(1)
    broken["bn.weight"] = torch.zeros(5)
    with pytest.raises(CheckpointMismatchError) as error:
        load_state_dict_checked(Tiny(), broken, source="tiny.pth")
    message = str(error.value)
    assert "tiny.pth" in message and "--allow-partial-load" in message
    assert "1 missing from the checkpoint: fc.bias" in message       # not num_batches_tracked
    assert "1 not in the model: extra.weight" in message
    assert "bn.weight: checkpoint (5) vs model (4)" in message

    partial = Tiny()
    report = load_state_dict_checked(partial, broken, allow_partial=True)
    assert report["missing"] == ["fc.bias"] and report["unexpected"] == ["extra.weight"]
    assert torch.equal(partial.fc.weight, source["fc.weight"])       # what fits is loaded
    assert torch.equal(partial.bn.weight, torch.ones(4))             # the rest as initialised


def test_checked_load_names_the_first_keys_of_an_unrelated_state_dict():
    unrelated = {f"encoder.blocks.{i}.weight": torch.zeros(2) for i in range(9)}
    with pytest.raises(CheckpointMismatchError, match=r"9 not in the model: encoder\.blocks\.0\."
                                                      r"weight, .* and 4 more"):
        load_state_dict_checked(Tiny(), unrelated)
    for payload, what in (([torch.zeros(1)], "a list of 1 items"),
                          (torch.zeros(3, 2), r"a tensor of shape \(3, 2\)")):
        with pytest.raises(CheckpointMismatchError, match=f"holds no state dict.*{what}"):
            load_state_dict_checked(Tiny(), payload, source="x.pth")
