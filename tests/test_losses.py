"""RSNLoss against literal per-sample / per-joint loops of spec 10.3."""

import pytest
import torch

from rsn_fast.losses import RSNLoss, ohkm, target_level


def _inputs(n=3, k=17, s=1, levels=4, h=8, w=6):
    outputs = [torch.randn(n, k, h, w, dtype=torch.float64) * 50 for _ in range(4 * s)]
    target = torch.rand(n, levels, k, h, w, dtype=torch.float64) * 255
    vis = torch.randint(0, 3, (n, k)).double()
    return outputs, target, vis


def _loop_reference(outputs, target, vis, s_total, masking, topk=8):
    """Per sample, per joint, straight from RSN_SPEC 10.3."""
    n, levels = target.shape[:2]
    total = 0.0
    for i, pred in enumerate(outputs):
        s, u = divmod(i, 4)
        lvl = (u + 1 if s == s_total - 1 else u) if levels == 5 else u
        gt = target[:, lvl]
        per_sample = []
        for b in range(n):
            if u < 3:
                acc = 0.0
                for j in range(gt.shape[1]):
                    if masking == "off":
                        g = gt[b, j] * (1.0 if vis[b, j] > 1 else 0.0)
                        acc += ((pred[b, j] - g) ** 2).mean()
                    else:
                        m = 1.0 if vis[b, j] > 0 else 0.0
                        acc += ((pred[b, j] * m - gt[b, j] * m) ** 2).mean()
                per_sample.append(acc / gt.shape[1])
            else:
                joint = []
                for j in range(gt.shape[1]):
                    m = 1.0 if vis[b, j] > 0 else 0.0
                    if masking == "off":
                        joint.append(((pred[b, j] - gt[b, j]) ** 2).mean() * m)
                    else:
                        joint.append(((pred[b, j] * m - gt[b, j] * m) ** 2).mean())
                joint = sorted(joint, reverse=True)[: min(topk, len(joint))]
                per_sample.append(sum(joint) / len(joint))
        total += sum(per_sample) / n * (0.25 if u < 3 else 1.0)
    return total


@pytest.mark.parametrize("masking", ["off", "mmpose"])
@pytest.mark.parametrize("s,levels,k", [(1, 4, 17), (2, 5, 17), (1, 5, 6), (3, 5, 16)])
def test_matches_loop(masking, s, levels, k):
    outputs, target, vis = _inputs(k=k, s=s, levels=levels)
    total, logs = RSNLoss(s, levels, masking)(outputs, target, vis)
    want = _loop_reference(outputs, target, vis, s, masking)
    torch.testing.assert_close(total, torch.as_tensor(want).to(total.dtype), rtol=1e-6, atol=1e-6)
    assert sorted(logs) == sorted(f"stage{i}_unit{u}" for i in range(s) for u in range(4))
    torch.testing.assert_close(sum(logs.values()), total.detach(), rtol=1e-6, atol=1e-6)


def test_ohkm_picks_largest():
    per_joint = torch.rand(4, 17)
    got = ohkm(per_joint, 8)
    want = torch.stack([torch.sort(r, descending=True).values[:8].mean() for r in per_joint]).mean()
    torch.testing.assert_close(got, want)
    # Raising a joint that is not in the top 8 to the top changes the result; lowering a non-top one does not.
    low = per_joint[0].argsort()[0]
    p2 = per_joint.clone()
    p2[0, low] = -1.0
    torch.testing.assert_close(ohkm(p2, 8), got)
    p2[0, low] = 10.0
    assert ohkm(p2, 8) > got


def test_off_masking_semantics():
    outputs, target, vis = _inputs()
    loss = RSNLoss(1, 4, "off")
    vis[:] = 2
    vis[0, 0] = 1  # occluded-labelled: coarse target zeroed, prediction still pushed to 0
    pred = outputs[0].clone()
    gt = target[:, 0]
    coarse = loss.unit_loss(pred, gt, vis, finest=False)
    manual = ((pred - gt * (vis > 1).double()[..., None, None]) ** 2).mean()
    torch.testing.assert_close(coarse, manual)
    # An unlabelled joint with MMPose masking contributes nothing, whatever the prediction.
    mm = RSNLoss(1, 4, "mmpose")
    vis[1, 3] = 0
    a = mm.unit_loss(pred, gt, vis, finest=False)
    pred2 = pred.clone()
    pred2[1, 3] += 1000
    torch.testing.assert_close(mm.unit_loss(pred2, gt, vis, finest=False), a)
    # ... while OFF masking penalises it.
    assert loss.unit_loss(pred2, gt, vis, finest=False) > loss.unit_loss(pred, gt, vis, finest=False)


@pytest.mark.parametrize("masking", ["off", "mmpose"])
def test_gradients_reach_every_output(masking):
    outputs, target, vis = _inputs(s=2, levels=5)
    vis[:] = 2
    outputs = [o.float().requires_grad_() for o in outputs]
    total, _ = RSNLoss(2, 5, masking)(outputs, target.float(), vis.float())
    total.backward()
    for i, o in enumerate(outputs):
        assert o.grad is not None and o.grad.abs().sum() > 0, i


def test_level_mapping_and_errors():
    assert [target_level(s, u, 2, 5) for s in range(2) for u in range(4)] == [0, 1, 2, 3, 1, 2, 3, 4]
    assert [target_level(0, u, 1, 4) for u in range(4)] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="target levels"):
        RSNLoss(2, 4)
    with pytest.raises(ValueError, match="outputs"):
        RSNLoss(1, 4)(*_inputs(s=2)[:1], torch.zeros(3, 4, 17, 8, 6), torch.zeros(3, 17))
