"""Unit tests of the engine's pieces that need no model or data: schedules, sampling, atomic checkpoints."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from rsn_fast.config import ConfigError, load_config
from rsn_fast.engine import checkpoint as ckpt
from rsn_fast.engine.optim import build_optimizer, build_scheduler, iters_for, lr_factor_fn, scaled_lr
from rsn_fast.engine.sampling import ResumableSampler, SeededDataset, ShardSampler, sample_seed


def _train_cfg(**kw):
    return load_config({"train": kw}).train


def test_paper_schedule_linear_to_zero():
    cfg = _train_cfg(lr=5e-4, schedule="linear")
    f = lr_factor_fn(cfg, max_iters=100, iters_per_epoch=10)
    assert f(0) == 1.0
    assert f(50) == pytest.approx(0.5)
    assert f(99) == pytest.approx(0.01)
    assert f(100) == 0.0


def test_off_schedule_warmup_then_linear():
    cfg = _train_cfg(schedule="linear", warmup_iters=2400, warmup_ratio=0.1)
    f = lr_factor_fn(cfg, max_iters=96000, iters_per_epoch=100)
    assert f(0) == pytest.approx(0.1)
    assert f(1200) == pytest.approx(0.55)
    assert f(2400) == pytest.approx(1.0)
    assert f(2400 + (96000 - 2400) // 2) == pytest.approx(0.5)
    assert f(96000) == 0.0


def test_mmpose_schedule_warmup_and_steps():
    cfg = _train_cfg(schedule="step", warmup_iters=500, warmup_ratio=0.001, step_epochs=[170, 190, 200])
    ipe = 10
    f = lr_factor_fn(cfg, max_iters=210 * ipe, iters_per_epoch=ipe)
    assert f(0) == pytest.approx(0.001)
    assert f(250) == pytest.approx(0.001 + 0.999 * 0.5)
    assert f(500) == 1.0
    assert f(170 * ipe - 1) == 1.0
    assert f(170 * ipe) == pytest.approx(0.1)
    assert f(190 * ipe) == pytest.approx(0.01)
    assert f(200 * ipe) == pytest.approx(0.001)


def test_scheduler_drives_optimizer_lr_per_iteration():
    cfg = _train_cfg(lr=1e-3, schedule="linear", warmup_iters=4, warmup_ratio=0.5, base_batch_size=32)
    assert scaled_lr(cfg, batch_size=16, world_size=4) == pytest.approx(2e-3)
    p = torch.nn.Parameter(torch.randn(3))
    opt = build_optimizer([p], cfg, batch_size=32, world_size=1)
    sched = build_scheduler(opt, cfg, max_iters=10, iters_per_epoch=5)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        p.grad = torch.ones(3)
        opt.step()
        sched.step()
    expect = [1e-3 * (0.5 + 0.5 * i / 4) for i in range(4)] + [1e-3 * (10 - i) / 6 for i in range(4, 10)]
    np.testing.assert_allclose(lrs, expect, rtol=1e-12)
    assert iters_for(_train_cfg(epochs=3), 7) == 21
    assert iters_for(_train_cfg(epochs=3, max_iters=5), 7) == 5


def test_train_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="amp"):
        _train_cfg(amp="fp8")
    with pytest.raises(ConfigError, match="schedul"):
        _train_cfg(schedul="step")
    with pytest.raises(ConfigError, match="step_epochs"):
        _train_cfg(step_epochs=[5, 3])


def test_resumable_sampler_matches_uninterrupted_order():
    size, bs, ws = 23, 3, 2
    full = {r: list(ResumableSampler(size, bs, r, ws, seed=5)) for r in range(ws)}
    for r in range(ws):
        s = ResumableSampler(size, bs, r, ws, seed=5)
        assert s.batches_per_epoch == 3 and len(full[r]) == 9
        s.set_epoch(0, start_batch=2)
        assert list(s) == full[r][6:]
        assert len(s) == 3
    # ranks are disjoint; each epoch has its own permutation
    assert not {i for _, i in full[0]} & {i for _, i in full[1]}
    s = ResumableSampler(size, bs, 0, ws, seed=5)
    s.set_epoch(1)
    assert [i for _, i in s] != [i for _, i in full[0]]
    with pytest.raises(ValueError, match="smaller than one global batch"):
        ResumableSampler(5, 3, 0, 2)


def test_shard_sampler_covers_uneven_sizes_once():
    for size, ws in ((10, 3), (2, 4), (7, 2)):
        got = sorted(i for r in range(ws) for i in ShardSampler(size, r, ws))
        assert got == list(range(size))


class _RandomItems(torch.utils.data.Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, i):
        import random

        return (random.random(), float(np.random.rand()), float(torch.rand(())))


def test_seeded_dataset_is_a_function_of_seed_epoch_index_and_spares_global_rng():
    ds = SeededDataset(_RandomItems(), seed=3)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = ds[(1, 4)]
    assert torch.equal(torch.get_rng_state(), before)  # main-process loading leaves the global stream alone
    assert ds[(1, 4)] == a
    assert ds[(2, 4)] != a and ds[(1, 5)] != a
    assert SeededDataset(_RandomItems(), seed=4)[(1, 4)] != a
    assert len({sample_seed(0, e, i) for e in range(20) for i in range(200)}) == 4000


def test_atomic_save_leaves_no_partial_file(tmp_path, monkeypatch):
    path = str(tmp_path / "c.pth")
    ckpt.atomic_save({"x": torch.arange(5)}, path)
    real_save = torch.save

    def failing_save(obj, f, *a, **k):
        f.write(b"partial bytes")  # some bytes hit the disk, then the writer dies
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="simulated"):
        ckpt.atomic_save({"x": torch.arange(7)}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert os.listdir(tmp_path) == ["c.pth"]
    assert torch.equal(torch.load(path)["x"], torch.arange(5))


def test_keep_last_and_find_latest(tmp_path):
    run = str(tmp_path)
    for it in (2, 4, 6, 8):
        state = {"format": "rsn_fast", "model": {}, "iteration": it}  # find_latest reads only our checkpoints
        ckpt.save_iter_checkpoint(state, run, it, keep_last=2)
    assert [i for i, _ in ckpt.iter_checkpoints(run)] == [6, 8]
    # a stray temporary file from a killed writer and a corrupt newest file are both ignored
    folder = tmp_path / ckpt.CKPT_DIR
    (folder / "iter_00000010.pth").write_bytes(b"garbage")
    (folder / "iter_00000012.pth.999.tmp").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="iter_00000010.pth: not a checkpoint"):
        assert ckpt.find_latest(run).endswith("iter_00000008.pth")
    ckpt.atomic_link(os.path.join(run, ckpt.CKPT_DIR, "iter_00000008.pth"), ckpt.best_path(run))
    assert torch.load(ckpt.best_path(run))["iteration"] == 8


def test_rng_state_roundtrip():
    state = ckpt.get_rng_state()
    a = (np.random.rand(), torch.rand(2))
    ckpt.set_rng_state(state)
    b = (np.random.rand(), torch.rand(2))
    assert a[0] == b[0] and torch.equal(a[1], b[1])
