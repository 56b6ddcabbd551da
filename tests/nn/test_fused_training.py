"""The CPU proof that the fused path is the training path: the demo model (configs/demo_synthetic.yaml, RSN-18)
trained by the real Trainer for 2 iterations with ``model.fused=triton`` (under TRITON_INTERPRET=1) and with
``model.fused=cuda`` (under the CPU emulation build of the extension) logs the losses of ``model.fused=off``
within fp32 tolerance, and its checkpoint loads into the plain model with strict=True.

Cost: the Triton interpreter runs RSN-18 at batch 2, 32x32 in about 25 s per training iteration on 2 shared
cores, so the run is 2 iterations at the smallest input the model accepts. The cuda case runs in CI's ASan
emulation pass too (the emulator's fiber switches are cheap there: csrc/emulation/emulator.cpp).
"""

from __future__ import annotations

import copy
import os

import pytest
import torch

from rsn_fast import _ext
from rsn_fast.config import load_config
from tests.conftest import TRITON_INTERPRET

ITERS = 2


def _emulation() -> bool:
    # rsn_fast._ext.extension_is_emulation comes with the CPU emulation build (its own issue); absent = no
    return bool(getattr(_ext, "extension_is_emulation", lambda: False)())


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> str:
    from rsn_fast.data.synthetic import generate

    root = tmp_path_factory.mktemp("fused_demo") / "syn"
    generate(str(root), num_train=2 * ITERS, num_val=2, seed=5)
    return str(root)


def _cfg(data: str, fused: str):
    return load_config(
        "configs/demo_synthetic.yaml",
        [
            "model.input_size=[32,32]",
            f"model.fused={fused}",
            f"data.root={data}",
            "data.workers=0",
            "data.batch_size=2",
            "data.persistent_workers=false",
            f"train.max_iters={ITERS}",
            "train.checkpoint_interval=1",
            f"train.keep_last={ITERS}",
            "train.log_interval=1",
            "train.eval_at_end=false",
            "train.tensorboard=false",
        ],
    )


def _fp32_loss_error(trainer) -> float:
    """|loss fp32 - loss fp64| / |loss fp64| of the plain model at its initial weights on the first batch: how
    far fp32 rounding alone moves this loss. At 32x32 the last stage's BN normalises 2 values per channel,
    which makes the model ill-conditioned (measured: outputs differ by ~1e-1..1 between fp32 and fp64, the loss,
    dominated by the 0..255 targets, by ~5e-4), so the bound comes from the model, not a fixed rtol."""
    from rsn_fast.engine.trainer import seed_everything
    from rsn_fast.models import build_model

    trainer.sampler.set_epoch(0, 0)
    batch = next(iter(trainer.loader))
    seed_everything(trainer.cfg.train.seed)  # the Trainer's initial weights
    model = build_model(trainer.cfg).train()
    losses = []
    for dtype in (torch.float32, torch.float64):
        m = copy.deepcopy(model).to(dtype)
        target = batch["target"] if "target" in batch else trainer.train_dataset.targets(
            batch["keypoints"], batch["target_weight"]
        )  # fmt: skip
        out = m(batch["image"].to(dtype))
        loss, _ = trainer.criterion(
            [o.double() for o in out], target.double(), batch["target_weight"].double()
        )
        losses.append(loss.item())
    return abs(losses[0] - losses[1]) / abs(losses[1])


# BN running statistics after iteration 1 (one forward with identical weights) of the stem and the first unit:
# their maps are 8x8 or larger at 32x32, so the statistics are well-conditioned, unlike the loss, which the
# 0..255 targets dominate (a kernel planted 0.1% off in forward moves the loss by less than fp32 rounding does)
EARLY_BN = ("backbone.top.", "backbone.multi_stage_rsn.0.downsample.layer1.")


def _early_bn_stats(path: str) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=False)["model"]
    return {
        k: v
        for k, v in state.items()
        if k.startswith(EARLY_BN) and k.endswith(("running_mean", "running_var"))
    }


def _train(
    data: str, run_dir: str, fused: str
) -> tuple[dict[int, float], str, list[str | None], float, dict]:
    from rsn_fast.engine import checkpoint as ckpt
    from rsn_fast.engine.run_log import train_losses
    from rsn_fast.engine.trainer import Trainer
    from rsn_fast.nn import FusedRSB

    cfg = _cfg(data, fused)

    trainer = Trainer(cfg, run_dir, progress=False)
    try:
        trainer.fit()
        err = _fp32_loss_error(trainer) if fused == "off" else 0.0
    finally:
        trainer.close()
    backends = [m.backend for m in trainer.plain.modules() if isinstance(m, FusedRSB)]
    first = dict(ckpt.iter_checkpoints(run_dir))[1]
    losses = train_losses(os.path.join(run_dir, "log.jsonl"))
    return losses, ckpt.find_latest(run_dir), backends, err, _early_bn_stats(first)


def _backend_param(name: str, ok: bool, reason: str):
    return pytest.param(name, marks=pytest.mark.skipif(not ok, reason=reason))


@pytest.mark.parametrize(
    "fused",
    [
        _backend_param("triton", TRITON_INTERPRET, "needs TRITON_INTERPRET=1 (the interpreter test pass)"),
        _backend_param("cuda", _emulation(), "needs the CPU emulation build of rsn_fast._C"),
    ],
)
def test_demo_model_trains_like_the_plain_model(demo_data, tmp_path, fused):
    from rsn_fast.models import build_model
    from rsn_fast.nn import FusedRSB

    plain_losses, _, none, err32, plain_bn = _train(demo_data, str(tmp_path / "off"), "off")
    fused_losses, path, backends, _, fused_bn = _train(demo_data, str(tmp_path / fused), fused)
    assert len(plain_bn) == len(fused_bn) > 20
    worst = max(((fused_bn[k] - v).abs().max() / v.abs().max()).item() for k, v in plain_bn.items())
    print(f"early BN running statistics after iteration 1: largest relative difference {worst:.3g}")
    assert worst <= 1e-4, f"model.fused={fused}: early BN running statistics differ by {worst:.3g} (relative)"
    assert none == [] and backends == [fused] * 8, backends  # the trainer really ran 8 fused RSBs
    assert sorted(plain_losses) == sorted(fused_losses) == list(range(1, ITERS + 1))
    for it in plain_losses:
        # fp32 throughout (no amp): the fused BN statistics and conv order change only rounding, so the
        # losses may differ by what fp32 rounding does to the plain model (x2, the tests' rule, plus the
        # same again for the one optimizer step between iterations) and a float32 ulp-scale atol
        tol = (2 * err32 * it + 1e-6) * abs(plain_losses[it])
        assert abs(fused_losses[it] - plain_losses[it]) <= tol, (
            f"iteration {it}: model.fused={fused} loss {fused_losses[it]!r} != plain {plain_losses[it]!r} "
            f"(bound {tol:.3g}; plain fp32 vs fp64 relative loss error {err32:.3g})"
        )
    state = torch.load(path, map_location="cpu", weights_only=False)
    plain = build_model(load_config("configs/demo_synthetic.yaml", ["model.fused=off"]))
    assert not any(isinstance(m, FusedRSB) for m in plain.modules())
    plain.load_state_dict(state["model"], strict=True)
    assert list(state["model"]) == list(plain.state_dict())
