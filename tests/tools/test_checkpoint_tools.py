"""Every tool loads checkpoints by the same safe path, whatever the source, and says so
loudly when a checkpoint is unsafe, broken or does not fit.

Checkpoints are served by a local ``http.server`` on 127.0.0.1 (a thread of the test
process); downloads go to a temporary ``TORCH_HOME``. The payload checkpoint runs
``touch MARKER`` when unpickled without ``weights_only``: the marker must never appear.
"""
import functools
import http.server
import json
import os
import os.path as osp
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from expedite_mm.apis.checkpoint import (CheckpointMismatchError, CorruptCheckpointError,
                                          UntrustedCheckpointError, load_checkpoint_file)
from harness import ROOT, command_json, run_command, write_ade20k
from test_tools import write_tiny_config


class RunsCode:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class Foreign:
    """A harmless class outside the allow-list."""

    def __init__(self):
        self.value = 7


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A tiny Segmenter config, its synthetic dataset, and checkpoints on a local server:
    ``good.pth`` (official format), ``payload.pth`` (runs code), ``foreign.pth``,
    ``mismatched.pth``; returns a namespace with the URLs and paths."""
    tmp = tmp_path_factory.mktemp("served")
    files = tmp / "www"
    files.mkdir()
    data_root = write_ade20k(str(tmp / "ade"))
    config = write_tiny_config(tmp, data_root)
    from expedite_mm.apis.config import build_model, load_config
    state = build_model(load_config(config)).state_dict()
    marker = tmp / "payload_ran"
    torch.save({"meta": {"iter": np.int64(4)}, "state_dict": state}, files / "good.pth")
    torch.save({"state_dict": state, "meta": {"hook": RunsCode(marker)}}, files / "payload.pth")
    torch.save({"state_dict": state, "meta": {"x": Foreign()}}, files / "foreign.pth")
    mismatched = {k: v for k, v in state.items() if not k.startswith("backbone.layers.3.")}
    mismatched["decode_head.old_head.weight"] = torch.zeros(3)
    mismatched["backbone.pos_embed"] = torch.zeros(1, 10, 32)
    torch.save({"state_dict": mismatched}, files / "mismatched.pth")

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(files))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    yield type("Served", (), dict(tmp=tmp, files=files, config=config, url=url, marker=marker))
    server.shutdown()
    assert not marker.exists(), "a checkpoint payload ran"


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """A fresh download cache (torch hub) for this test, also for its subprocesses."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "torch_home"


def run_tool(relative, *args, env=None):
    done = subprocess.run([sys.executable, osp.join(ROOT, relative), *map(str, args)],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    return done.returncode, done.stdout + done.stderr


# --------------------------------------------------------------------------- sources
def test_url_loads_like_a_local_file_and_is_cached(served, torch_home):
    checkpoint = load_checkpoint_file(f"{served.url}/good.pth")
    assert checkpoint["meta"]["iter"] == 4 and "backbone.cls_token" in checkpoint["state_dict"]
    assert (torch_home / "hub" / "checkpoints" / "good.pth").is_file()   # where mmengine puts it


def test_url_payload_is_refused_and_trust_is_the_opt_in(served, torch_home):
    with pytest.raises(UntrustedCheckpointError) as error:
        load_checkpoint_file(f"{served.url}/payload.pth")
    assert "posix.system" in str(error.value) or "nt.system" in str(error.value)
    assert f"{served.url}/payload.pth" in str(error.value)
    assert not served.marker.exists()
    with pytest.raises(UntrustedCheckpointError, match="Foreign.*--trust-checkpoint"):
        load_checkpoint_file(f"{served.url}/foreign.pth")
    assert load_checkpoint_file(f"{served.url}/foreign.pth", trust=True)["meta"]["x"].value == 7


def test_hub_cache_and_open_mmlab_names_take_the_same_path(served, torch_home, monkeypatch,
                                                            tmp_path):
    # a file already in torch's hub cache (no download: nothing listens on port 9)
    cache = torch_home / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / "cached.pth").write_bytes((served.files / "payload.pth").read_bytes())
    with pytest.raises(UntrustedCheckpointError, match="cached.pth"):
        load_checkpoint_file("http://127.0.0.1:9/cached.pth")
    # open-mmlab:// names resolve through mmengine's table (extended by MMENGINE_HOME)
    home = tmp_path / "mmengine_home"
    home.mkdir()
    (home / "open_mmlab.json").write_text(json.dumps(
        {"tiny_payload": f"{served.url}/payload.pth", "tiny_local": "payload.pth"}))
    (home / "payload.pth").write_bytes((served.files / "payload.pth").read_bytes())
    monkeypatch.setenv("MMENGINE_HOME", str(home))
    for name in ("open-mmlab://tiny_payload", "openmmlab://tiny_local"):
        with pytest.raises(UntrustedCheckpointError, match="posix.system|nt.system"):
            load_checkpoint_file(name)
    (cache / "empty.pth").write_bytes(b"")
    with pytest.raises(CorruptCheckpointError, match="empty.*Delete it from the cache"):
        load_checkpoint_file("http://127.0.0.1:9/empty.pth")
    assert not served.marker.exists()


def test_converters_and_benchmark_refuse_a_url_payload(served, torch_home):
    url = f"{served.url}/payload.pth"
    for command in ("convert-segmenter", "convert-dpt"):
        with pytest.raises(UntrustedCheckpointError, match="--trust-checkpoint"):
            run_command(command, url, served.tmp / "out.pth")
    with pytest.raises(UntrustedCheckpointError):
        run_command("benchmark", served.config, "--checkpoint", url, "--repeat", "1",
                    "--warmup", "0")
    assert not served.marker.exists() and not (served.tmp / "out.pth").exists()


def test_benchmark_checkpoint_must_fit_unless_partial_load_is_allowed(served, torch_home,
                                                                     tmp_path):
    argv = ["benchmark", served.config, "--checkpoint", f"{served.url}/mismatched.pth",
            "--repeat", "1", "--warmup", "0", "--shape", "64", "64", "--no-memory"]
    with pytest.raises(CheckpointMismatchError, match=r"backbone\.layers\.3\.ln1\.weight"):
        run_command(*argv)
    assert command_json(tmp_path, *argv, "--allow-partial-load")["expedited"]["median_ms"] > 0


# --------------------------------------------------------------------------- tools/test.py
@pytest.mark.slow
def test_test_tool_refuses_a_url_payload_in_a_fresh_process(served, torch_home, tmp_path):
    code, log = run_tool("tools/test.py", served.config, f"{served.url}/payload.pth",
                         "--work-dir", tmp_path / "work")
    assert code != 0
    assert "UntrustedCheckpointError" in log and "--trust-checkpoint" in log
    assert "posix.system" in log or "nt.system" in log
    assert not served.marker.exists()
    # the environment switch does not open the door either
    code, log = run_tool("tools/test.py", served.config, f"{served.url}/payload.pth",
                         "--work-dir", tmp_path / "work",
                         env={"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"})
    assert code != 0 and "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 is set" in log
    assert not served.marker.exists()


@pytest.mark.slow
def test_test_tool_fails_on_a_mismatched_checkpoint_naming_the_keys(served, tmp_path):
    code, log = run_tool("tools/test.py", served.config, served.files / "mismatched.pth",
                         "--work-dir", tmp_path / "work")
    assert code != 0 and "CheckpointMismatchError" in log
    assert "missing from the checkpoint: backbone.layers.3." in log
    assert "1 not in the model: decode_head.old_head.weight" in log
    assert "backbone.pos_embed: checkpoint (1, 10, 32) vs model (1, 1601, 32)" in log
    assert "--allow-partial-load" in log
    assert "Iter(test)" not in log                   # stopped before evaluating anything


def test_test_tool_partial_load_is_an_explicit_choice(served, tmp_path):
    checkpoint = str(served.files / "mismatched.pth")
    metrics = command_json(tmp_path, "test", served.config, checkpoint, "--work-dir",
                           tmp_path / "w", "--allow-partial-load", flag="--metrics-json")
    assert "mIoU" in metrics


# --------------------------------------------------------------------------- other tools
def test_get_flops_traces_a_ratio_cluster_grid(served, tmp_path):
    summary = command_json(tmp_path, "flops", served.config, "--shape", "480", "480",
                           "--cfg-options",
                           "model.backbone.cluster_grid=0.7")      # 30 x 30 -> 21 x 21
    assert summary["ratio_backbone"] < 0.95
    assert summary["expedited"]["clustering_reconstruction_gflops"] > 0
    assert not summary["note"]                  # the whole model traced, not just the backbone


@pytest.mark.parametrize("command", ["test", "flops", "benchmark", "sweep"])
def test_cfg_options_without_a_value_is_a_usage_error(command, capsys):
    argv = ["config.py", "model.backbone.cluster_after"]
    if command == "test":
        argv.insert(1, "checkpoint.pth")
    with pytest.raises(SystemExit) as stop:
        run_command(command, *argv[:-1], "--cfg-options", "a=1", argv[-1])
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert "--cfg-options" in error and "'model.backbone.cluster_after'" in error
    assert "key=value" in error


# --------------------------------------------------------------------------- converters
CONVERTERS = {"convert-segmenter": ("segmenter", "SegmenterConversionError", "encoder."),
              "convert-dpt": ("dpt", "DPTConversionError", "pretrained.")}


@pytest.mark.parametrize("command", CONVERTERS)
def test_converters_explain_what_they_got_and_expected(command, tmp_path):
    import importlib
    module, error_type, prefix = CONVERTERS[command]
    error = getattr(importlib.import_module(f"expedite_mm.converters.{module}"), error_type)
    for payload, what in (([torch.zeros(2)], "a list of 1 items"),
                          (torch.zeros(2, 3), r"a tensor of shape \(2, 3\)")):
        path = tmp_path / "payload.pth"
        torch.save(payload, path)
        with pytest.raises(error, match=what):
            run_command(command, path, tmp_path / "out.pth")
    assert not (tmp_path / "out.pth").exists()


def test_converter_errors_name_the_key_and_the_expected_layout():
    from expedite_mm.converters import dpt, segmenter
    with pytest.raises(segmenter.SegmenterConversionError,
                       match=r"encoder\.cls_token: expected a tensor, got a str"):
        segmenter.convert_segmenter({"encoder.cls_token": "x"})
    with pytest.raises(segmenter.SegmenterConversionError,
                       match=r"decoder\.proj_patch: expected a square \(d, d\) matrix .*"
                             r"got shape \(4, 3\)"):
        segmenter.convert_segmenter({"decoder.proj_patch": torch.zeros(4, 3)})
    with pytest.raises(segmenter.SegmenterConversionError,
                       match=r"encoder\.mystery.*expected encoder\.\{patch_embed"):
        segmenter.convert_segmenter({"encoder.mystery": torch.zeros(1)})
    base = {"pretrained.model.patch_embed.backbone.stem.conv.weight": torch.zeros(1)}
    with pytest.raises(dpt.DPTConversionError, match=r"scratch\.mystery.*expected pretrained"):
        dpt.convert_dpt_hybrid({**base, "scratch.mystery": torch.zeros(1)})
    with pytest.raises(dpt.DPTConversionError, match=r"pretrained\.model\.cls_token: expected "
                                                     r"a tensor, got a list"):
        dpt.convert_dpt_hybrid({**base, "pretrained.model.cls_token": [0.0]})


def test_converted_file_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    import errno

    from expedite_mm.apis import convert
    dst = tmp_path / "converted.pth"
    convert.save_converted({"w": torch.ones(3)}, str(dst), {"converter": "test"})
    before = dst.read_bytes()

    def disk_full(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        convert.save_converted({"w": torch.zeros(3)}, str(dst), {"converter": "test"})
    assert dst.read_bytes() == before                         # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["converted.pth"]   # no leftovers
    monkeypatch.undo()
    assert torch.equal(torch.load(dst, weights_only=True)["state_dict"]["w"], torch.ones(3))
