"""Subspace alignment: the alignment math on synthetic features, and SA end to end on moons."""

from __future__ import annotations

import math

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from dann.config import method_class
from dann.methods.sa import SA
from dann.methods.sa import fit_alignment, fit_linear
from dann.models import build_nets
from dann.run.build import build_datamodule
from dann.run.train import train

K = 5
TINY = ["pair=moons", "trainer.max_steps=30", "trainer.val_check_interval=1000"]


def blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features in R^5 with distinct variances; the label is the sign of the first one."""
    r = np.random.default_rng(seed)
    y = r.integers(0, 2, n)
    x = np.c_[(2 * y - 1) * 2.0 + 0.3 * r.standard_normal(n), r.standard_normal((n, K - 1)) * [1.0, 0.5, 0.3, 0.2]]
    return x, y


def rotation(deg: float) -> np.ndarray:
    """Orthogonal R: rotates the label axis (e1) towards the largest nuisance axis (e2)."""
    a = math.radians(deg)
    r = np.eye(K)
    r[:2, :2] = [[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]
    return r


@pytest.fixture(scope="module")
def rotated():
    xs, ys = blobs(2000, 0)
    xt, _ = blobs(2000, 1)
    xte, yte = blobs(2000, 2)
    r = rotation(75)
    return xs, ys, xt @ r.T, xte @ r.T, yte


def unaligned_acc(a, xs, ys, xte, yte) -> float:
    return fit_linear((xs - a.mu_s) / a.sd_s, ys).score((xte - a.mu_t) / a.sd_t, yte)


def test_sa_recovers_a_rotated_target_with_d_below_k(rotated):
    """Target = source rotated by a known orthogonal R (75 degrees in the label/nuisance plane).
    The unaligned classifier mixes nuisance into the label axis; SA with d=1 maps the target's
    first principal axis onto the source's and classifies (almost) perfectly."""
    xs, ys, xt, xte, yte = rotated
    a = fit_alignment(xs, xt, K, standardize=False)
    assert unaligned_acc(a, xs, ys, xte, yte) < 0.75
    assert fit_linear(a.source(xs, 1), ys).score(a.target(xte, 1), yte) > 0.98
    # Algorithm 1 of Fernando et al.: Sa = Xs Ps (Ps^T Pt), not the source in the target basis (Xs Pt)
    z, ps, pt = xs - a.mu_s, a.ps[:, :1], a.pt[:, :1]
    np.testing.assert_allclose(a.source(xs, 1), z @ ps @ ps.T @ pt, atol=1e-10)
    assert not np.allclose(a.source(xs, 1), z @ pt, atol=0.1)
    # M = Ps^T Pt is the cosine between the two first principal axes: |cos 75 deg|
    assert abs(float((a.ps[:, :1].T @ a.pt[:, :1])[0, 0])) == pytest.approx(math.cos(math.radians(75)), abs=0.05)


@pytest.mark.parametrize("standardize", [False, True])
def test_full_dimension_sa_is_no_alignment(rotated, standardize):
    """With d = k, Ps M = Ps Ps^T Pt = Pt: SA is the unaligned classifier in a rotated basis
    (so a rotation cannot be undone at full d; the alignment only acts for d < k)."""
    xs, ys, xt, xte, yte = rotated
    a = fit_alignment(xs, xt, K, standardize=standardize)
    np.testing.assert_allclose(a.ps @ (a.ps.T @ a.pt), a.pt, atol=1e-10)
    sa = fit_linear(a.source(xs, K), ys).predict(a.target(xte, K))
    na = fit_linear((xs - a.mu_s) / a.sd_s, ys).predict((xte - a.mu_t) / a.sd_t)
    assert (sa == na).mean() > 0.995  # equal up to L-BFGS's tolerance


def test_sa_does_not_read_target_labels(rotated):
    xs, ys, xt, xte, yte = rotated
    a = fit_alignment(xs, xt, 2)
    b = fit_alignment(xs, xt.copy(), 2)  # the alignment takes no target label at all
    np.testing.assert_array_equal(a.pt, b.pt)
    with pytest.raises(ValueError, match="outside 1..2"):
        a.source(xs, 3)


def test_sa_end_to_end_on_moons(cfg_factory):
    rec = train(cfg_factory(*TINY, "method=sa"))
    m = rec["metrics"]
    for k in ("test/tgt_acc", "test/tgt_acc_nosa", "test/src_acc", "sa/src_acc", "sa/dim"):
        assert k in m and math.isfinite(m[k]), k
    assert 0.0 <= m["test/tgt_acc"] <= 1.0
    assert m["sa/dim"] == 15  # default 50, clipped to the shallow net's 15 hidden units
    assert rec["method"] == "sa"


def _fit_and_test(cfg, **sa_kwargs) -> tuple[SA, dict[str, float]]:
    """What train() does, with SA's options passed explicitly."""
    pl.seed_everything(cfg.seed, verbose=False)
    dm = build_datamodule(cfg)
    dm.prepare()
    nets = build_nets("shallow", dm.input_shape, dm.num_classes, hidden=15)
    model = SA(nets, num_classes=dm.num_classes, max_steps=cfg.trainer.max_steps, lr=0.5, anneal=False, **sa_kwargs)
    trainer = pl.Trainer(accelerator="cpu", max_steps=cfg.trainer.max_steps, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         val_check_interval=1000, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=dm)
    out = {k: float(v) for d in trainer.test(model, datamodule=dm, verbose=False) for k, v in d.items()}
    return model, out


def test_oracle_picks_best_dim_on_target_test_and_says_so(cfg_factory):
    cfg = cfg_factory(*TINY, "method=sa")
    model, m = _fit_and_test(cfg, select="oracle", sa_dims=[1, 2, 3, 15])
    by_dim = model.sa_result["by_dim"]
    assert sorted(by_dim) == [1, 2, 3, 15]
    assert m["test/tgt_acc"] == pytest.approx(max(by_dim.values()))
    assert by_dim[int(m["sa/dim"])] == pytest.approx(max(by_dim.values()))
    assert model.record_extras()["selection"] == "oracle"

    default, m1 = _fit_and_test(cfg, sa_dim=2)
    assert default.record_extras()["selection"] == "last"
    assert m1["sa/dim"] == 2 and list(default.sa_result["by_dim"]) == [2]


def test_bad_options_fail_clearly():
    nets = build_nets("shallow", (2,), 2)
    with pytest.raises(ValueError, match="allowed: last, im, oracle"):
        SA(nets, num_classes=2, max_steps=10, select="best")
    with pytest.raises(ValueError, match="needs method.sa_dims"):
        SA(nets, num_classes=2, max_steps=10, select="oracle", sa_dims=[])


def test_oracle_selection_lands_in_the_results_record(cfg_factory):
    rec = train(cfg_factory(*TINY, "method=sa", "method.select=oracle", "method.sa_dims=[1,3]"))
    assert rec["selection"] == "oracle"
    assert rec["metrics"]["sa/dim"] in (1, 3)
    assert train(cfg_factory(*TINY, "method=source_only", sub="so"))["selection"] == "last"


def test_sa_is_named_by_its_yaml():
    assert method_class({"name": "sa"}) is SA


def test_sa_on_a_finished_source_only_run_equals_sa_trained_from_scratch(cfg_factory):
    # SA's network is the source-only network: `method=sa resume=<source_only run>/checkpoints/last.ckpt`
    # reuses it instead of training it again, and must give what training SA itself gives.
    so = train(cfg_factory(*TINY, "method=source_only", sub="so"))
    ckpt = f"{so['config']['output_dir']}/checkpoints/last.ckpt"
    reused = train(cfg_factory(*TINY, "method=sa", f"resume={ckpt}", sub="sa_reused"))
    scratch = train(cfg_factory(*TINY, "method=sa", sub="sa_scratch"))
    assert reused["resumed_from"] == ckpt and reused["steps"] == 30
    assert reused["metrics"]["test/tgt_acc_nosa"] == pytest.approx(so["metrics"]["test/tgt_acc"], abs=1e-6)
    for k in ("test/tgt_acc", "test/tgt_acc_nosa", "sa/src_acc"):
        assert reused["metrics"][k] == pytest.approx(scratch["metrics"][k], abs=1e-6), k


def test_im_selection_picks_d_without_target_labels_and_reports_the_oracle_beside(cfg_factory):
    # select=im: the validator the tuning study chose (on another pair) picks d from the aligned
    # classifier's predictions on unlabelled target training features; the best d on target test
    # labels is reported beside it, named oracle.
    cfg = cfg_factory(*TINY, "method=sa")
    model, m = _fit_and_test(cfg, select="im", sa_dims=[1, 2, 3, 15])
    r = model.sa_result
    assert sorted(r["im_by_dim"]) == sorted(r["by_dim"]) == [1, 2, 3, 15]
    assert int(m["sa/dim"]) == max(r["im_by_dim"], key=r["im_by_dim"].get)
    assert m["test/tgt_acc"] == pytest.approx(r["by_dim"][int(m["sa/dim"])])
    assert m["sa/oracle_tgt_acc"] == pytest.approx(max(r["by_dim"].values()))
    assert r["by_dim"][int(m["sa/oracle_dim"])] == pytest.approx(max(r["by_dim"].values()))
    assert model.record_extras()["selection"] == "im"

    # no target label chooses: scrambled target labels (train and test) give the same d and scores
    dm = model.trainer.datamodule
    for split in ("train", "test"):
        y = dm.split("tgt", split).y
        y.copy_(y[torch.randperm(len(y), generator=torch.Generator().manual_seed(0))].flip(0))
    again = model.fit_sa()
    assert again["dim"] == r["dim"] and again["im_by_dim"] == pytest.approx(r["im_by_dim"])


def test_sa_information_maximisation_is_the_validators_im():
    from dann.methods.sa import information_maximisation
    from dann.selection.scores import im_score

    p = torch.softmax(torch.randn(200, 10, generator=torch.Generator().manual_seed(1)) * 3, 1)
    assert information_maximisation(p.double().numpy()) == pytest.approx(im_score(p), abs=1e-5)


def test_im_selection_lands_in_the_results_record(cfg_factory):
    rec = train(cfg_factory(*TINY, "method=sa", "method.select=im", "method.sa_dims=[1,3]"))
    assert rec["selection"] == "im" and rec["metrics"]["sa/dim"] in (1, 3)
    assert rec["metrics"]["sa/oracle_dim"] in (1, 3)
