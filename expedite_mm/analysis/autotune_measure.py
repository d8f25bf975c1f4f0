"""The autotuner's measurements (``tools/analysis/autotune.py``, docs/autotune.md).

The images measured on (:func:`list_images`, :func:`folder_images`,
:func:`dataset_images`) and the :class:`Tuner`, which holds the stock model and measures
settings through the cache (:mod:`~expedite_mm.analysis.autotune_cache`): FLOPs (one
fvcore count per chain of settings, every alpha derived from the per-layer counts),
latency (interleaved with the stock model), the agreement of a prediction with the stock
one (:mod:`expedite_mm.analysis.agreement`; plain ViTs replay the stock model's layers
before alpha, :class:`CandidateModels`) and, for ``--validate``, the config's evaluator;
and :func:`successive_halving`, which spends those measurements on the candidates.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import os.path as osp
import socket
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from .autotune_cache import Cache, checkpoint_digest, digest, file_digest
from .autotune_space import (STOCK, AutotuneError, AutotuneOptions, Setting, apply_setting,
                             first_line, probe_structure)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


# --------------------------------------------------------------------------- inputs
@dataclass
class Image:
    """One input: its identity (for the cache) and how to get the model's data batch.

    Args:
        name: the file's name (for messages).
        key: the hash of its bytes (and its label's).
        load: returns the data sample of the test pipeline.
    """

    name: str
    key: str
    load: Callable[[], dict]


def list_images(folder: str) -> List[str]:
    """Image files under ``folder`` (recursive, sorted); every one must be readable.

    Args:
        folder: the ``--images`` folder.

    Raises:
        AutotuneError: no such folder, no image in it, or an unreadable image.
    """
    import cv2
    if not osp.isdir(folder):
        raise AutotuneError(f"--images {folder}: no such folder")
    files = sorted(osp.join(root, name) for root, _, names in os.walk(folder)
                   for name in names if name.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
        raise AutotuneError(f"--images {folder}: no images in it "
                            f"({', '.join(IMAGE_EXTENSIONS)})")
    bad = [path for path in files if cv2.imread(path, cv2.IMREAD_UNCHANGED) is None]
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise AutotuneError(f"--images: cannot read {bad[0]}{more}: not a valid image file")
    return files


def test_pipeline_without_annotations(cfg: Any) -> List[dict]:
    """The config's test pipeline with its annotation loading removed.

    Args:
        cfg: the config.
    """
    from ..apis.config import inference_pipeline
    return [step for step in inference_pipeline(cfg)
            if "Annotation" not in str(step.get("type", ""))]


def folder_images(cfg: Any, files: Sequence[str]) -> List[Image]:
    """The user's image files, through the config's test pipeline (no annotations).

    Args:
        cfg: the config.
        files: the image files (:func:`list_images`).
    """
    from mmengine.dataset import Compose
    pipeline = Compose(test_pipeline_without_annotations(cfg))

    def loader(index: int, path: str) -> Callable[[], dict]:
        return lambda: pipeline(dict(img_path=path, img_id=index, seg_fields=[],
                                     reduce_zero_label=False))
    return [Image(osp.basename(path), file_digest(path), loader(i, path))
            for i, path in enumerate(files)]


def dataset_images(cfg: Any, count: int) -> Tuple[List[Image], Any]:
    """The first ``count`` samples of the config's test set (with their labels).

    Args:
        cfg: the config.
        count: how many samples (fewer if the set is smaller).

    Returns:
        ``(images, dataset)``.

    Raises:
        AutotuneError: the test set cannot be loaded, or is empty.
    """
    from mmengine.registry import DATASETS
    try:
        dataset = DATASETS.build(cfg.test_dataloader.dataset)
        size = len(dataset)
    except Exception as error:  # noqa: BLE001 - any failure to find the data
        raise AutotuneError(f"cannot load the config's test set ({first_line(error)}); give "
                            f"--images DIR with your images") from None
    if size == 0:
        raise AutotuneError("the config's test set is empty; give --images DIR")
    images = []
    for index in range(min(count, size)):
        info = dataset.get_data_info(index)
        files = [info[k] for k in ("img_path", "seg_map_path") if isinstance(info.get(k), str)]
        key = digest([file_digest(f) if osp.exists(f) else f for f in files])
        images.append(Image(osp.basename(info.get("img_path", str(index))), key,
                            lambda i=index: dataset[i]))
    return images, dataset


# --------------------------------------------------------------------------- the tuner
class Tuner:
    """Holds the stock model, the measurements (through :attr:`cache`) and what the
    search needs of them.

    Args:
        options: the run's options.
        cfg: the (expedited-type) config.
        stock_model: the stock model built from it, with the checkpoint's weights.
        images: the images measured on.
        dataset: the config's test set (``--val``; for the evaluator's metadata), or None.
    """

    def __init__(self, options: AutotuneOptions, cfg: Any, stock_model: nn.Module,
                 images: List[Image], dataset: Any = None) -> None:
        from ..apis.config import default_input_shape
        self.args, self.cfg, self.stock_model = options, cfg, stock_model
        self.images, self.dataset = images, dataset
        self.shape = (tuple((options.shape * 2)[:2]) if options.shape
                      else tuple(default_input_shape(cfg)))
        self.structure = probe_structure(cfg, stock_model, self.shape)
        self.cache = Cache()
        self.forwards = 0
        self.flop_counts = 0
        self.exact_flops = False
        self.chain_alphas: Dict[Setting, List[int]] = {}
        model_text = json.dumps(cfg.model.to_dict(), sort_keys=True, default=str)
        self.config_id = digest(model_text, test_pipeline_without_annotations(cfg),
                                cfg.get("custom_imports"))
        self.checkpoint_id = checkpoint_digest(options.checkpoint)
        self.agreement = None
        self._evaluator = None
        backbone = stock_model.backbone
        self.replay = self.structure.kind == "vit" and not options.no_stock_reuse
        self.replay_checked = False
        self.replay_limit = (min(backbone.out_indices) + 1
                             if self.replay and not getattr(backbone, "out_origin", False) else 0)

    # ------------------------------------------------------------------ models
    def build(self, setting: Setting) -> nn.Module:
        """The model of ``setting``, sharing the stock model's weights.

        Args:
            setting: the setting (:data:`STOCK`: the stock model itself).
        """
        from ..apis.config import build_model_sharing
        if setting == STOCK:
            return self.stock_model
        return build_model_sharing(apply_setting(self.cfg, setting), self.stock_model)

    # ------------------------------------------------------------------ FLOPs
    def _count(self, setting: Setting) -> Dict[str, Any]:
        """A real fvcore count of ``setting`` (cached): whole, backbone, per layer."""
        key = digest("flops", self.config_id, self.shape, setting.key)
        found = self.cache.get(key)
        if found is not None:
            return found
        try:
            model = self.build(setting)
        except (ValueError, TypeError) as error:
            record = {"invalid": first_line(error)}
        else:
            record = self._flop_record(model)
            del model
        self.cache.put(key, record)
        return record

    def _flop_record(self, model: nn.Module) -> Dict[str, Any]:
        from .flops import model_flops
        counted = model_flops(model, self.shape, backbone_only=self.args.budget_on == "backbone")
        self.flop_counts += 1
        return {"whole": counted.whole, "backbone": counted.backbone, "note": counted.note,
                "layers": [counted.by_module.get(n, 0) for n in self.structure.layer_names]}

    def _chain(self, chain: Setting) -> Dict[str, Any]:
        """What counting a chain (a setting with alpha left open) tells of its settings:
        the cost of each layer as the first clustered one and as a later one, and of
        everything else, which may change by a fixed step per clustered layer (windowed
        backbones derive every clustered block's attention bias in the stage) (cached).
        The first clustered layer can cost more (EViT/ToMe score the tokens with its norm
        and projections).

        Plain ViTs whose layers hold their whole cost: one count, of the model at the
        chain's largest alpha (at most depth - 2) with its first alpha layers replaced by
        stubs passing their input on (a layer's output has its input's shape, and the
        count depends on shapes only), so only the embedding, the clustered layers, the
        head and the operators are traced; the layers are alike, so one layer's costs are
        every layer's. Other backbones: counts at the smallest and the largest alpha (each
        layer from the smallest on)."""
        alphas = self.chain_alphas[chain]
        depth = self.structure.depth
        stubbed = (self.structure.layer_holds_cost and not self.args.no_stock_reuse
                   and depth >= 2 and min(alphas[-1], depth - 2) <= self.replay_limit)
        at = [min(alphas[-1], depth - 2)] if stubbed else sorted({alphas[0], alphas[-1]})
        key = digest("chain", self.config_id, self.shape, chain.key, at, stubbed)
        found = self.cache.get(key)
        if found is not None:
            return found
        stock = self.stock_flops()
        counts = []
        for alpha in at:
            try:
                model = self.build(dataclasses.replace(chain, alpha=alpha))
            except (ValueError, TypeError) as error:
                self.cache.put(key, {"invalid": first_line(error)})
                return self.cache.get(key)
            if stubbed:
                for i in range(alpha):
                    model.backbone.layers[i] = _Skip()
            counts.append(self._flop_record(model))
            del model
        alpha, layers = at[0], counts[0]["layers"]
        if stubbed:
            first, clustered = [layers[alpha]] * depth, [layers[alpha + 1]] * depth
        else:
            first = [None] * alpha + layers[alpha:]
            clustered = [None] * (alpha + 1) + layers[alpha + 1:]
        record = {"alpha": alpha, "first": first, "clustered": clustered}
        for what in ("whole", "backbone"):
            rests = []
            for a, counted in zip(at, counts):
                if counted[what] is None:
                    break
                before = 0 if stubbed else sum(stock["layers"][:a])
                rests.append(counted[what] - before - sum(counted["layers"][a:]))
            record[f"{what}_rest"] = rests[0] if rests else None
            record[f"{what}_step"] = ((rests[1] - rests[0]) / (at[1] - at[0])
                                      if len(rests) == 2 else 0)
        self.cache.put(key, record)
        return record

    def stock_flops(self) -> Dict[str, Any]:
        """The stock model's count (whole, backbone, per layer).

        Raises:
            AutotuneError: the whole model cannot be counted and the budget is on it.
        """
        record = self._count(STOCK)
        if record.get("whole") is None and self.args.budget_on == "whole":
            raise AutotuneError(f"the whole model cannot be counted ({record.get('note')}); "
                                f"use --budget-on backbone")
        return record

    def _derived(self, setting: Setting) -> Dict[str, Any]:
        """Whole and backbone flops of ``setting`` from its chain's count: the stock
        layers before alpha, the chain's first and later clustered layers after it."""
        chain = self._chain(setting.chain)
        if "invalid" in chain:
            return chain
        stock, alpha = self.stock_flops(), setting.alpha
        layers = (sum(stock["layers"][:alpha]) + chain["first"][alpha]
                  + sum(chain["clustered"][alpha + 1:]))
        steps = alpha - chain["alpha"]
        return {what: (None if chain[f"{what}_rest"] is None else
                       round(chain[f"{what}_rest"] + steps * chain[f"{what}_step"]) + layers)
                for what in ("whole", "backbone")}

    def flops(self, setting: Setting) -> Dict[str, Any]:
        """GFLOPs of ``setting`` and its ratios to the stock model (``'cost'``: the one the
        budget counts); ``'flops'`` says whether they were counted for this setting or
        derived from its chain's count; ``{'invalid': why}`` if it does not build.

        Args:
            setting: the setting (its chain must be known: :meth:`prepare_chains`).
        """
        stock = self.stock_flops()
        counted = self.cache.get(digest("flops", self.config_id, self.shape, setting.key))
        if setting == STOCK or counted is not None or setting.alpha is None or self.exact_flops:
            record, source = counted or self._count(setting), "counted"
        else:
            record, source = self._derived(setting), "derived"
        if "invalid" in record:
            return {"invalid": record["invalid"]}
        out = {"gflops": None if record["whole"] is None else record["whole"] / 1e9,
               "backbone_gflops": record["backbone"] / 1e9,
               "backbone_ratio": record["backbone"] / stock["backbone"], "flops": source}
        out["gflops_ratio"] = (record["whole"] / stock["whole"]
                               if record["whole"] is not None and stock["whole"] else None)
        out["cost"] = out["gflops_ratio" if self.args.budget_on == "whole" else "backbone_ratio"]
        return out

    def check_flop_model(self) -> None:
        """Count one derived setting for real and compare; if they differ, count every
        setting instead. The setting: the first chain's smallest alpha that its chain
        count did not count (stubbed chains: the smallest; others: the second)."""
        for chain, alphas in sorted(self.chain_alphas.items(), key=lambda item: item[0].key):
            stubbed = self._chain(chain).get("first", [None])[0] is not None
            candidates = alphas if stubbed else alphas[1:-1]
            if not candidates or "invalid" in self._chain(chain):
                continue
            setting = dataclasses.replace(chain, alpha=candidates[0])
            derived, counted = self._derived(setting), self._count(setting)
            if "invalid" in counted:
                continue
            what = "whole" if self.args.budget_on == "whole" else "backbone"
            if abs(counted[what] - derived[what]) > 1e-6 * max(1.0, abs(counted[what])):
                print(f"note: the FLOPs derived for {setting.label()} "
                      f"({derived[what] / 1e9:.6f}) are not its count "
                      f"({counted[what] / 1e9:.6f} GFLOPs); counting every setting",
                      file=sys.stderr)
                self.exact_flops = True
            return

    def prepare_chains(self, settings: Sequence[Setting]) -> None:
        """Group the settings into chains (alpha left open), each with its sorted alphas.

        Args:
            settings: the search space.
        """
        self.chain_alphas = {}
        for s in settings:
            if s.alpha is not None:
                self.chain_alphas.setdefault(s.chain, []).append(s.alpha)
        for alphas in self.chain_alphas.values():
            alphas.sort()

    # ------------------------------------------------------------------ latency
    def _latency_key(self, setting: Setting) -> str:
        return digest("latency", self.config_id, self.shape, setting.key, self.args.device,
                      socket.gethostname(), self.args.repeat)

    def measured_latency(self, setting: Setting) -> Optional[Dict[str, float]]:
        """The latency of ``setting`` if it was measured (never measures).

        Args:
            setting: the setting.
        """
        return self.cache.get(self._latency_key(setting))

    def latency(self, setting: Setting) -> Dict[str, float]:
        """Median latency (ms) of ``model.predict`` on one synthetic input, interleaved with
        the stock model (cached per machine and device): ``latency_ms``, ``stock_ms``,
        ``latency_ratio``.

        Args:
            setting: the setting.
        """
        key = self._latency_key(setting)
        found = self.cache.get(key)
        if found is None:
            found = self._measure_latency(setting)
            self.cache.put(key, found)
        return found

    def _measure_latency(self, setting: Setting) -> Dict[str, float]:
        from ..apis.config import synthetic_batch
        from .latency import benchmark
        model = self.build(setting)
        calls = {}
        for name, m in (("stock", self.stock_model), ("candidate", model)):
            inputs, samples = synthetic_batch(m, self.shape, 1, self.args.device)
            calls[name] = (lambda m=m, x=inputs, s=samples: m.predict(x, s))
        with torch.no_grad():
            timings = benchmark(calls, torch.device(self.args.device), repeat=self.args.repeat,
                                warmup=1, progress=False, measure_memory=False)
        record = {"latency_ms": timings["candidate"].median * 1e3,
                  "stock_ms": timings["stock"].median * 1e3}
        record["latency_ratio"] = record["latency_ms"] / record["stock_ms"]
        return record

    # ------------------------------------------------------------------ predictions
    def _run(self, model: nn.Module, image: Image) -> Tuple[Any, dict]:
        from mmengine.dataset import pseudo_collate
        data = pseudo_collate([image.load()])
        with torch.no_grad():
            outputs = model.test_step(data)
        self.forwards += 1
        return outputs[0], data

    def reference(self, image: Image, record: Sequence[int] = ()
                  ) -> Tuple[Dict[str, Any], Optional[Dict[int, List[Any]]]]:
        """The stock prediction on ``image`` (compact arrays; run once, cached), and with
        ``record`` the outputs of those layers (1-based alphas) in every call of the
        backbone (one per slide crop), for replaying (the stock model then runs again if
        its prediction was cached).

        Args:
            image: the image.
            record: the layers whose outputs to record.
        """
        key = digest("stock", self.config_id, self.checkpoint_id, image.key)
        ref = self.cache.get(key)
        missing_truth = self.args.validate and self._truth(STOCK, image) is None
        if ref is not None and not record and not missing_truth:
            self._set_measure(None)
            return ref, None
        recorded: Dict[int, List[Any]] = {a: [] for a in record}
        layers = self.stock_model.backbone.layers if record else []
        handles = [layers[a - 1].register_forward_hook(
            lambda module, inputs, output, a=a: recorded[a].append(output)) for a in record]
        try:
            sample, data = self._run(self.stock_model, image)
        finally:
            for handle in handles:
                handle.remove()
        self._set_measure(sample)
        if ref is None:
            ref = self.agreement.extract(sample)
            self.cache.put(key, ref)
        if missing_truth:
            self._store_truth(STOCK, image, sample, data)
        return ref, (recorded if record else None)

    def _set_measure(self, sample: Any) -> None:
        """The agreement measure, from the first stock prediction (its name is cached)."""
        from .agreement import agreement_for
        if self.agreement is not None:
            return
        key = digest("measure", self.config_id, self.checkpoint_id)
        name = self.cache.get(key)
        if name is not None:
            self.agreement = agreement_for(_Fields(name), self.stock_model)
            return
        self.agreement = agreement_for(sample, self.stock_model)
        self.cache.put(key, self.agreement.name)

    def _stats_key(self, setting: Setting, image: Image) -> str:
        return digest("agreement", self.config_id, self.checkpoint_id, image.key, setting.key)

    def _done(self, setting: Setting, image: Image) -> bool:
        return (self.cache.get(self._stats_key(setting, image)) is not None
                and (not self.args.validate or self._truth(setting, image) is not None))

    def replayable(self, setting: Setting) -> bool:
        """Whether ``setting`` can start from the stock model's output of its layer alpha
        (plain ViTs whose outputs all come from layer alpha or later).

        Args:
            setting: the setting.
        """
        return (self.replay and setting.alpha is not None
                and 1 <= setting.alpha <= self.replay_limit)

    def measure_image(self, image: Image, settings: Sequence[Setting],
                      models: "CandidateModels", bar: Any = None) -> None:
        """Agreement statistics (cached) of every setting on one image; the stock model
        runs at most once for them.

        Args:
            image: the image.
            settings: the settings to measure on it.
            models: the search's candidate models.
            bar: a progress bar (tqdm) to advance per setting, or None.
        """
        todo = [s for s in settings if not self._done(s, image)]
        if bar is not None:
            bar.update(len(settings) - len(todo))
        if not todo:
            return
        replay = [s for s in todo if self.replayable(s)]
        ref, recorded = self.reference(image, sorted({s.alpha for s in replay}))
        for s in todo:
            if s in replay and self.replay:
                model, layer = models.replay_model(s)
                layer.start(recorded[s.alpha])
                sample, data = self._run(model, image)
                if not self.replay_checked:
                    sample = self._check_replay(s, image, sample, models)
            else:
                sample, data = self._run(models.model(s), image)
            self.cache.put(self._stats_key(s, image),
                           self.agreement.compare(self.agreement.extract(sample), ref))
            if self.args.validate:
                self._store_truth(s, image, sample, data)
            if bar is not None:
                bar.update(1)

    def _check_replay(self, setting: Setting, image: Image, sample: Any,
                      models: "CandidateModels") -> Any:
        """The first replayed prediction against the full model's (must be identical)."""
        full, _ = self._run(models.model(setting), image)
        self.replay_checked = True
        a, b = self.agreement.extract(sample), self.agreement.extract(full)
        if not all(np.array_equal(a[k], b[k]) for k in b):
            print(f"note: replaying the stock model's first layers changed the prediction of "
                  f"{setting.label()}; running every candidate in full", file=sys.stderr)
            self.replay = False
            return full
        return sample

    def score(self, setting: Setting, images: Sequence[Image]) -> float:
        """Agreement (percent) of ``setting`` on ``images`` (all must be measured).

        Args:
            setting: the setting.
            images: the images.
        """
        self._set_measure(None)
        return self.agreement.aggregate([self.cache.get(self._stats_key(setting, im))
                                         for im in images])

    # ------------------------------------------------------------------ true metric (validate)
    def evaluator(self) -> Any:
        """The config's ``test_evaluator`` (built once)."""
        if self._evaluator is None:
            from mmengine.evaluator import Evaluator
            evaluator = Evaluator(self.cfg.test_evaluator)
            evaluator.dataset_meta = getattr(self.dataset, "metainfo", None)
            self._evaluator = evaluator
        return self._evaluator

    def _truth_key(self, setting: Setting, image: Image) -> str:
        return digest("truth", self.config_id, self.checkpoint_id, image.key, setting.key,
                      json.dumps(self.cfg.test_evaluator, default=str))

    def _truth(self, setting: Setting, image: Image) -> Any:
        return self.cache.get(self._truth_key(setting, image))

    def _store_truth(self, setting: Setting, image: Image, sample: Any, data: dict) -> None:
        evaluator = self.evaluator()
        for metric in evaluator.metrics:
            metric.results.clear()
        evaluator.process(data_samples=[sample], data_batch=data)
        results = [_encode_results(metric.results) for metric in evaluator.metrics]
        for metric in evaluator.metrics:
            metric.results.clear()
        self.cache.put(self._truth_key(setting, image), results)

    def true_metric(self, setting: Setting, images: Sequence[Image]) -> Tuple[str, float]:
        """The config's evaluator on ``setting``'s predictions of ``images``: (name, value).

        Args:
            setting: the setting (measured with ``validate`` on).
            images: the images.
        """
        from mmengine.logging import MMLogger
        evaluator = self.evaluator()
        per_image = [self._truth(setting, im) for im in images]
        metrics: Dict[str, Any] = {}
        logger = MMLogger.get_current_instance()
        level = logger.level
        logger.setLevel(logging.WARNING)       # IoUMetric prints a per-class table
        try:
            for i, metric in enumerate(evaluator.metrics):
                results = [r for entry in per_image for r in _decode_results(entry[i])]
                metrics.update(metric.compute_metrics(results))
        finally:
            logger.setLevel(level)
        name = "mIoU" if "mIoU" in metrics else next(
            k for k, v in metrics.items() if isinstance(v, (int, float)))
        return name, float(metrics[name])


class _Fields:
    """Stands in for a data sample when only the kind of prediction is known (cached)."""

    FIELD = {"mIoU": "pred_sem_seg", "PQ": "pred_panoptic_seg", "mask PQ": "pred_instances",
             "1-AbsRel": "pred_depth_map", "top-1": "pred_label", "cosine": "image_embedding"}

    def __init__(self, measure: str) -> None:
        self._fields = [self.FIELD[measure]]

    def keys(self) -> List[str]:
        return self._fields


def _encode_results(value: Any) -> Any:
    """An evaluator's per-image results as JSON (tensors and arrays tagged)."""
    if isinstance(value, torch.Tensor):
        return {"__tensor__": value.tolist(), "dtype": str(value.dtype).split(".")[-1]}
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return {"__tuple__": [_encode_results(v) for v in value]}
    if isinstance(value, list):
        return [_encode_results(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode_results(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise AutotuneError(f"--validate: cannot keep an evaluator result of type "
                        f"{type(value).__name__}")


def _decode_results(value: Any) -> Any:
    """:func:`_encode_results` undone."""
    if isinstance(value, dict):
        if "__tensor__" in value:
            return torch.tensor(value["__tensor__"], dtype=getattr(torch, value["dtype"]))
        if "__ndarray__" in value:
            return np.array(value["__ndarray__"], dtype=value["dtype"])
        if "__tuple__" in value:
            return tuple(_decode_results(v) for v in value["__tuple__"])
        return {k: _decode_results(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_results(v) for v in value]
    return value


# --------------------------------------------------------------------------- candidates
class _Skip(nn.Module):
    """Stands in for a stock layer whose output is known (replayed, or counted apart):
    passes its input on."""

    def forward(self, x: Any) -> Any:
        return x


class _Replay(nn.Module):
    """Stands in for layer ``alpha`` (1-based) of a candidate: returns, call by call (one
    per slide crop), what the stock model's layer computed on the same input."""

    def __init__(self) -> None:
        super().__init__()
        self.outputs: List[Any] = []
        self.calls = 0

    def start(self, outputs: List[Any]) -> None:
        self.outputs, self.calls = outputs, 0

    def forward(self, x: Any) -> Any:
        out = self.outputs[self.calls]
        self.calls += 1
        return out


class CandidateModels:
    """The candidates' models of one search (built once, sharing the stock weights): the
    full model, and for plain ViTs a replaying one whose first alpha layers return the
    stock model's recorded outputs (those layers are the stock ones, so the result is the
    same; checked on the first use, and not used again if it ever differed).

    Args:
        tuner: builds the models.
    """

    def __init__(self, tuner: Tuner) -> None:
        self.tuner = tuner
        self.full: Dict[Setting, Any] = {}
        self.replaying: Dict[Setting, Any] = {}

    def keep(self, settings: Iterable[Setting]) -> None:
        """Forget the models of every other setting.

        Args:
            settings: the settings whose models to keep.
        """
        keep = set(settings)
        for table in (self.full, self.replaying):
            for s in [s for s in table if s not in keep]:
                del table[s]

    def model(self, setting: Setting) -> nn.Module:
        """The full model of ``setting``.

        Args:
            setting: the setting.
        """
        if setting not in self.full:
            self.full[setting] = self.tuner.build(setting)
        return self.full[setting]

    def replay_model(self, setting: Setting) -> Tuple[nn.Module, _Replay]:
        """The replaying model of ``setting`` and its replay layer.

        Args:
            setting: a replayable setting (:meth:`Tuner.replayable`).
        """
        if setting not in self.replaying:
            model = self.tuner.build(setting)
            layers = model.backbone.layers
            for i in range(setting.alpha - 1):
                layers[i] = _Skip()
            layers[setting.alpha - 1] = _Replay()
            self.replaying[setting] = model
        model = self.replaying[setting]
        return model, model.backbone.layers[setting.alpha - 1]


def successive_halving(tuner: Tuner, candidates: List[Setting], images: List[Image],
                       first: int, eta: int, cost: Callable[[Setting], float],
                       progress: bool) -> Dict[Setting, Dict[str, Any]]:
    """Measure ``candidates`` round by round: all on the first ``first`` images, then the
    best ``ceil(n / eta)`` (at least 2) on ``eta`` times as many, until the last round
    measures the survivors on every image.

    Args:
        tuner: measures.
        candidates: the settings to measure.
        images: all the images.
        first: the images of the first round.
        eta: keep 1/eta of the candidates, eta times the images, per round.
        cost: a setting's cost (ties in agreement: the cheaper goes on).
        progress: show progress bars.

    Returns:
        Per candidate: its agreement on the images it was measured on, how many
        (``images``), and the round it stopped at (``round``).
    """
    from tqdm import tqdm
    results: Dict[Setting, Dict[str, Any]] = {}
    alive = list(candidates)
    count = min(first, len(images))
    round_index = 0
    models = CandidateModels(tuner)
    while alive:
        subset = images[:count]
        bar = tqdm(total=count * len(alive), disable=not progress, unit="run",
                   desc=f"round {round_index}: {len(alive)} settings x {count} images")
        for im in subset:
            tuner.measure_image(im, alive, models, bar)
        bar.close()
        for s in alive:
            results[s] = {"agreement": tuner.score(s, subset), "images": count,
                          "round": round_index}
        if count >= len(images):
            break
        alive.sort(key=lambda s: (-results[s]["agreement"], cost(s), s.key))
        alive = alive[:max(2, math.ceil(len(alive) / eta))]
        models.keep(alive)
        count = min(len(images), count * eta)
        round_index += 1
    return results
