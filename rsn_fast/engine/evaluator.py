"""Inference over a validation split (flip test, decoding), gathering across ranks, COCO AP / MPII PCKh.

Under DDP each rank runs an unpadded shard (:class:`~rsn_fast.engine.sampling.ShardSampler`); rank 0 gathers
the per-sample arrays, drops any repeated dataset index, orders them by index and scores them once.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from rsn_fast.config import Config
from rsn_fast.engine.checkpoint import unwrap
from rsn_fast.engine.distributed import broadcast_object, gather_objects, get_info
from rsn_fast.engine.sampling import ShardSampler, collate_for, limit_cv2_threads
from rsn_fast.engine.threads import make_tuner

_AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def _flip_pairs(cfg: Config) -> list[tuple[int, int]]:
    from rsn_fast.data.keypoints import get_keypoint_set

    return [tuple(p) for p in get_keypoint_set(cfg.data).flip_pairs]


def build_eval_loader(cfg: Config, dataset, rank: int, world_size: int) -> DataLoader:
    """A loader over this rank's unpadded shard of ``dataset``."""
    workers = cfg.data.workers
    if workers > 0:
        limit_cv2_threads()
    return DataLoader(
        dataset,
        batch_size=cfg.test.batch_size,
        collate_fn=collate_for(dataset),
        sampler=ShardSampler(len(dataset), rank, world_size),
        num_workers=workers,
        pin_memory=cfg.data.pin_memory and torch.cuda.is_available(),
        # A private generator keeps the training process's global RNG untouched by evaluation.
        generator=torch.Generator().manual_seed(0),
        persistent_workers=False,
    )


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    loader: DataLoader,
    cfg: Config,
    device: torch.device,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Keypoints of every sample ``loader`` yields.

    Returns:
        dict of arrays over this rank's N samples: ``index`` (N,) int64, ``image_id`` (N,) int64, ``coords``
        (N,K,2) image pixels, ``scores`` (N,K) keypoint scores, ``box_score`` (N,), ``center`` (N,2),
        ``box_size`` (N,2).
    """
    net = unwrap(model)
    from rsn_fast.selftest import self_check

    self_check(net, cfg, device)  # once per model and device: a no-op after the trainer's check
    was_training = net.training
    net.eval()
    flip_pairs = _flip_pairs(cfg) if cfg.test.flip else None
    mem = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    keys = ("index", "image_id", "coords", "scores", "box_score", "center", "box_size")
    out: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    it = loader
    if progress:
        from tqdm import tqdm

        it = tqdm(loader, desc="eval", dynamic_ncols=True, mininterval=1.0)
    # CPU only, when configure_cpu_threads chose tuning; the thread count is restored at the end (a trainer
    # that evaluates mid-run keeps its own tuner's choice).
    tuner = make_tuner() if device.type == "cpu" else None
    threads = torch.get_num_threads()
    t_batch = time.perf_counter()
    try:
        for batch in it:
            img = batch["image"].to(device, non_blocking=True).contiguous(memory_format=mem)
            meta = batch["meta"]
            coords, scores = infer_keypoints(net, img, meta["center"], meta["box_size"], cfg, flip_pairs)
            out["index"].append(meta["index"].numpy().astype(np.int64))
            out["image_id"].append(meta["image_id"].numpy().astype(np.int64))
            out["coords"].append(coords.float().cpu().numpy())
            out["scores"].append(scores.float().cpu().numpy())
            out["box_score"].append(meta["score"].float().numpy())
            out["center"].append(meta["center"].float().numpy())
            out["box_size"].append(meta["box_size"].float().numpy())
            if tuner is not None:
                now = time.perf_counter()
                tuner.step(now - t_batch)
                t_batch = now
    finally:
        if tuner is not None:
            torch.set_num_threads(threads)
    if was_training:
        net.train()
    k = cfg.model.num_keypoints
    empty = {
        "index": np.zeros((0,), np.int64),
        "image_id": np.zeros((0,), np.int64),
        "coords": np.zeros((0, k, 2), np.float32),
        "scores": np.zeros((0, k), np.float32),
        "box_score": np.zeros((0,), np.float32),
        "center": np.zeros((0, 2), np.float32),
        "box_size": np.zeros((0, 2), np.float32),
    }
    return {key: (np.concatenate(v) if v else empty[key]) for key, v in out.items()}


def infer_keypoints(
    net: torch.nn.Module,
    img: torch.Tensor,
    center: torch.Tensor,
    box_size: torch.Tensor,
    cfg: Config,
    flip_pairs: list[tuple[int, int]] | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The test-time pipeline on one batch of crops: forward (``train.amp`` autocast), flip test, decoding.

    Args:
        net: the eval-mode model (or any callable with its output).
        img: (N, 3, H, W) normalised crops on the model's device.
        center, box_size: (N, 2) the crops' box centres and extended, aspect-fitted sizes, image px.
        cfg: the run config (``test.decode_mode``, ``test.blur_kernel``, ``model.input_size``, ``train.amp``).
        flip_pairs: the keypoint set's pairs for the flip test, or None for no flip test.
    Returns:
        coords (N, K, 2) image px and scores (N, K), on img's device.
    """
    from rsn_fast.ops import decode_heatmaps

    device = img.device
    amp = cfg.train.amp
    with torch.autocast(device.type, dtype=_AMP_DTYPES.get(amp, torch.float32), enabled=amp != "off"):
        heat = net(img)
        heat_flip = net(img.flip(3)) if flip_pairs is not None else None
    # fp16/bf16 heatmaps go to the decoder as they are: its kernels read them and compute in fp32.
    heat = _last(heat)
    if heat_flip is not None:
        heat_flip = _last(heat_flip)
    return decode_heatmaps(
        heat,
        center.to(device=device, dtype=torch.float32),
        box_size.to(device=device, dtype=torch.float32),
        tuple(cfg.model.input_size),
        mode=cfg.test.decode_mode,
        blur_kernel=cfg.test.blur_kernel,
        flipped=heat_flip,
        flip_pairs=flip_pairs,
    )


def _last(heat: Any) -> torch.Tensor:
    # Eval mode returns one tensor; a list (training mode) ends with the final output.
    return heat[-1] if isinstance(heat, (list, tuple)) else heat


def merge_predictions(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate per-rank predictions, keep the first occurrence of each dataset index, order by index."""
    merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    _, first = np.unique(merged["index"], return_index=True)  # unique() sorts, so this is index order
    return {k: v[first] for k, v in merged.items()}


def _ann_file(cfg: Config, dataset) -> str:
    path = getattr(dataset, "ann_file", None)
    if path:
        return path
    ann = cfg.data.val_ann
    return ann if os.path.isabs(ann) else os.path.join(cfg.data.root, ann)


def coco_results(pred: dict[str, np.ndarray], cfg: Config) -> list[dict]:
    """COCO keypoint results (person score per ``cfg.test.score_mode``, optional OKS-NMS) from predictions."""
    from rsn_fast.evaluation.coco import keypoints_to_coco_results

    t = cfg.test
    results = keypoints_to_coco_results(
        pred["image_id"],
        pred["coords"],
        pred["scores"],
        pred["box_score"],
        keypoint_score_thr=t.keypoint_score_thr,
        score_mode=t.score_mode,
        indices=pred["index"],
        areas=pred["box_size"].prod(axis=1),
    )
    if t.use_nms:
        from rsn_fast.data.keypoints import get_keypoint_set
        from rsn_fast.evaluation.nms import oks_nms_results

        sigmas = get_keypoint_set(cfg.data).sigmas
        results = oks_nms_results(results, thr=t.oks_thr, sigmas=sigmas, vis_thr=t.keypoint_score_thr)
    return results


def evaluate(
    model: torch.nn.Module,
    cfg: Config,
    dataset=None,
    out_json: str | None = None,
    print_summary: bool = True,
    progress: bool = False,
) -> dict[str, float]:
    """Evaluate ``model`` on the validation split on every rank of the job; every rank gets the metrics.

    Args:
        model: the (possibly wrapped) model; evaluated in eval mode, restored afterwards.
        cfg: the run config (``data.dets_file`` chooses detected boxes).
        dataset: the validation data set (built from ``cfg`` when None).
        out_json: where rank 0 writes the COCO results JSON.
        print_summary: print COCOeval's 10 numbers.
    """
    info = get_info()
    if dataset is None:
        from rsn_fast.data import build_dataset

        dataset = build_dataset(cfg, "val")
    loader = build_eval_loader(cfg, dataset, info.rank, info.world_size)
    t0 = time.time()
    pred = predict(model, loader, cfg, info.device, progress=progress and info.is_main)
    parts = gather_objects(pred, dst=0)
    metrics: dict[str, float] = {}
    if info.is_main:
        merged = merge_predictions(parts)
        if len(merged["index"]) != len(dataset):
            raise RuntimeError(
                f"evaluation gathered {len(merged['index'])} samples, data set has {len(dataset)}"
            )
        if cfg.data.dataset == "mpii":
            metrics = _mpii_metrics(merged, dataset, cfg.test.pckh_thr)
        else:
            results = coco_results(merged, cfg)
            if out_json:
                os.makedirs(os.path.dirname(os.path.abspath(out_json)), exist_ok=True)
                with open(out_json, "w") as f:
                    json.dump(results, f)
            from rsn_fast.data.keypoints import get_keypoint_set
            from rsn_fast.evaluation.coco import coco_keypoint_eval

            sigmas = get_keypoint_set(cfg.data).sigmas
            if results:
                metrics = coco_keypoint_eval(
                    _ann_file(cfg, dataset), results, sigmas=sigmas, print_summary=print_summary
                )
            else:
                metrics = {"AP": 0.0}
        metrics = {k: float(v) for k, v in metrics.items() if np.isscalar(v)}
        metrics["eval_time_s"] = time.time() - t0
        metrics["num_samples"] = float(len(merged["index"]))
    return broadcast_object(metrics, src=0)


def _mpii_metrics(pred: dict[str, np.ndarray], dataset, thr: float) -> dict[str, float]:
    """PCKh at ``thr`` and @0.1 (mean, MPII groups) against the data set's records, in dataset-index order."""
    from rsn_fast.evaluation.mpii import pckh

    recs = [dataset.records[i] for i in pred["index"]]
    gt = np.stack([np.asarray(r["keypoints"], dtype=np.float64) for r in recs])  # (N, K, 3) image pixels
    heads = np.asarray([r["head_size"] for r in recs], dtype=np.float64)
    res = pckh(pred["coords"], gt[..., :2], gt[..., 2] > 0, heads, thr=thr)
    out = {k: float(v) for k, v in res.items() if np.isscalar(v)}
    out["AP"] = out.get("PCKh", 0.0)  # best-checkpoint selection reads "AP"
    return out
