"""The methods of issue #20 (DAN, CORAL, CDAN, CDAN+E, MDD, MCC, MCD, ADDA), and those of issue #32
(VADA, DIRT-T, self-ensembling, SHOT, BSP, AFN, BNM, JAN) through the same end-to-end tests.

Each loss against an independent computation on tiny tensors (loops / numpy, written here), the
gradient directions that make each method what it is, and every method end to end on the moons:
a complete record, W&B, the table, the NaN guard, and resume equal to an uninterrupted run whose
target labels were all replaced by -1.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from unittest import mock

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from conftest import make_cfg
from dann.config import CONF_DIR, method_class, method_options, validate
from dann.data.datamodule import PairBatches
from dann.errors import ConfigError
from dann.methods.base import DAMethod
from dann.models import build_nets
from dann.records import REQUIRED_KEYS

NEW = ["dan", "coral", "cdan", "cdan_e", "mdd", "mcc", "mcd", "adda",
       "vada", "dirt_t", "self_ensembling", "shot", "dann_bsp", "cdan_bsp", "afn", "bnm", "jan"]
# the loss terms each method returns (logged as train/<term>)
TERMS = {"dan": {"cls", "mmd"}, "coral": {"cls", "coral"}, "cdan": {"cls", "dom"}, "cdan_e": {"cls", "dom"},
         "mdd": {"cls", "mdd"}, "mcc": {"cls", "mcc"}, "mcd": {"cls", "disc", "disc_after"},
         "adda": {"cls", "dom", "map"}, "vada": {"cls", "dom", "ent", "vat_src", "vat_tgt"},
         "dirt_t": {"kl", "ent", "vat"}, "self_ensembling": {"cls", "cons", "bal"}, "shot": {"src", "im", "pseudo"},
         "dann_bsp": {"cls", "dom", "bsp"}, "cdan_bsp": {"cls", "dom", "bsp"}, "afn": {"cls", "norm"},
         "bnm": {"cls", "bnm"}, "jan": {"cls", "jmmd"}}


def needs_start(name: str) -> bool:
    """DIRT-T refines a finished run of another method (method.start): the tests give it one."""
    return method_class({"name": name}).requires_start


def make(name: str, arch: str = "shallow", shape=(2,), k: int = 2, max_steps: int = 100, **options):
    """Method ``name`` with its yaml's options (``options`` override them) on a fresh network."""
    conf = OmegaConf.to_container(OmegaConf.load(f"{CONF_DIR}/method/{name}.yaml"))
    torch.manual_seed(0)
    return method_class(conf)(build_nets(arch, shape, k), num_classes=k, max_steps=max_steps,
                              **{**method_options(conf), **options})


def rand_batch(n=8, shape=(2,), k=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"src_x": torch.randn(n, *shape, generator=g), "src_y": torch.randint(0, k, (n,), generator=g),
            "tgt_x": torch.randn(n, *shape, generator=g) + 1, "tgt_y": torch.randint(0, k, (n,), generator=g)}


def gaussian(a, b, bw):
    return math.exp(-sum((x - y) ** 2 for x, y in zip(a, b)) / bw)


def mean_sq_distance(rows):
    n = len(rows)
    return sum(sum((x - y) ** 2 for x, y in zip(rows[i], rows[j])) for i in range(n) for j in range(n) if i != j) \
        / (n * (n - 1))


# -- DAN ---------------------------------------------------------------------------------------
def test_mmd_one_kernel_quadratic_and_linear_match_direct_sums():
    from dann.methods.dan import mk_mmd

    xs = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], dtype=torch.float64)
    xt = torch.tensor([[2.0, 1.0], [3.0, 0.5], [2.5, 2.0], [1.5, 3.0]], dtype=torch.float64)
    s, t = xs.tolist(), xt.tolist()
    bw = 2.0 * mean_sq_distance(s + t)  # one kernel, multiplier 2
    n = 4
    kss = sum(gaussian(s[i], s[j], bw) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    ktt = sum(gaussian(t[i], t[j], bw) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kst = sum(gaussian(s[i], t[j], bw) for i in range(n) for j in range(n)) / (n * n)
    assert float(mk_mmd(xs, xt, [2.0], "quadratic")) == pytest.approx(kss + ktt - 2 * kst, rel=1e-12)
    # the paper's eq. 6: quad-tuples (s1, s2, t1, t2), (s3, s4, t3, t4)
    lin = sum(gaussian(s[i], s[i + 1], bw) + gaussian(t[i], t[i + 1], bw) - gaussian(s[i], t[i + 1], bw)
              - gaussian(s[i + 1], t[i], bw) for i in (0, 2)) * 2 / n
    assert float(mk_mmd(xs, xt, [2.0], "linear")) == pytest.approx(lin, rel=1e-12)


def test_mk_mmd_is_the_mean_of_its_kernels_and_grows_with_the_shift():
    from dann.methods.dan import mk_mmd

    g = torch.Generator().manual_seed(0)
    xs, xt = torch.randn(64, 5, generator=g, dtype=torch.float64), torch.randn(64, 5, generator=g, dtype=torch.float64)
    cs = [0.25, 0.5, 1.0, 2.0, 4.0]
    # the bandwidth is the pooled batch's, so each single-kernel value uses the same s^2
    for est in ("linear", "quadratic"):
        one = [float(mk_mmd(xs, xt, [c], est)) for c in cs]
        assert float(mk_mmd(xs, xt, cs, est)) == pytest.approx(sum(one) / len(cs), rel=1e-10)
    near, far = float(mk_mmd(xs, xt, cs, "quadratic")), float(mk_mmd(xs, xt + 3, cs, "quadratic"))
    assert abs(near) < 0.05 < far


def test_dan_loss_reaches_the_features_and_its_bandwidth_carries_no_gradient():
    m = make("dan", estimator="quadratic")
    terms = m.losses(rand_batch())
    assert set(terms) == TERMS["dan"]
    m.zero_grad()
    terms["mmd"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.features.parameters())
    assert all(p.grad is None for p in m.classifier.parameters())  # layer=features
    from dann.methods.dan import bandwidth

    assert not bandwidth(torch.randn(4, 2, requires_grad=True)).requires_grad


# -- CORAL -------------------------------------------------------------------------------------
def test_coral_is_the_frobenius_distance_of_numpy_covariances():
    from dann.methods.coral import coral, covariance

    g = torch.Generator().manual_seed(1)
    zs, zt = torch.randn(7, 3, generator=g, dtype=torch.float64), 2 * torch.randn(9, 3, generator=g, dtype=torch.float64)
    cs, ct = np.cov(zs.numpy(), rowvar=False), np.cov(zt.numpy(), rowvar=False)
    np.testing.assert_allclose(covariance(zs).numpy(), cs, rtol=1e-12)
    assert float(coral(zs, zt)) == pytest.approx(((cs - ct) ** 2).sum() / (4 * 3 ** 2), rel=1e-12)


def test_coral_gradient_is_the_papers_eq_4():
    from dann.methods.coral import coral

    g = torch.Generator().manual_seed(2)
    ds = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    dt = torch.randn(5, 4, generator=g, dtype=torch.float64)
    coral(ds, dt).backward()
    # eq. 4: dL/dD_S = 1/(d^2 (n_S - 1)) ((D_S^T - (1/n_S)(1^T D_S)^T 1^T)^T (C_S - C_T))
    x, d, n = ds.detach().numpy(), 4, 6
    cs, ct = np.cov(x, rowvar=False), np.cov(dt.numpy(), rowvar=False)
    centred = (x.T - np.outer(x.sum(0), np.ones(n)) / n).T
    np.testing.assert_allclose(ds.grad.numpy(), centred @ (cs - ct) / (d * d * (n - 1)), rtol=1e-10)


# -- CDAN --------------------------------------------------------------------------------------
def test_cdan_multilinear_map_shape_and_entries():
    from dann.methods.cdan import multilinear, randomized_multilinear

    f, g = torch.randn(3, 4), torch.softmax(torch.randn(3, 5), 1)
    t = multilinear(f, g)
    assert t.shape == (3, 20)
    for i in range(3):
        for a in range(4):
            for c in range(5):
                assert t[i, a * 5 + c] == pytest.approx(float(f[i, a] * g[i, c]))
    rf, rg = torch.randn(4, 16), torch.randn(5, 16)
    r = randomized_multilinear(f, g, rf, rg)
    assert r.shape == (3, 16)
    assert torch.allclose(r, torch.stack([(f[i] @ rf) * (g[i] @ rg) for i in range(3)]) / 4.0)
    # E[<T(f,g), T(f',g')>] = <f,f'><g,g'>: the randomized map approximates the multilinear one's inner products
    rf, rg = torch.randn(4, 200_000), torch.randn(5, 200_000)
    r = randomized_multilinear(f, g, rf, rg)
    assert torch.allclose(r @ r.T, t @ t.T, rtol=0.05, atol=0.05)


def test_cdan_uses_the_randomized_map_above_4096_like_the_paper():
    small = make("cdan")  # shallow net: 15 features x 2 classes = 30
    assert not small.randomized and small.condition(torch.randn(2, 15), torch.rand(2, 2)).shape == (2, 30)
    big = make("cdan", arch="mnist", shape=(3, 28, 28), k=10)  # 768 x 10 = 7680 > 4096
    assert big.randomized and big.r_f.shape == (768, 1024) and big.r_g.shape == (10, 1024)
    assert big.discriminator[0].in_features == 1024
    # the random matrices are part of the checkpoint: a rebuilt model loads the same map
    torch.manual_seed(123)
    other = method_class({"name": "cdan"})(build_nets("mnist", (3, 28, 28), 10), num_classes=10, max_steps=10)
    assert not torch.equal(other.r_f, big.r_f)
    other.load_state_dict(big.state_dict())
    assert torch.equal(other.r_f, big.r_f) and torch.equal(other.r_g, big.r_g)


def test_cdan_entropy_weights_match_direct_computation():
    from dann.methods.cdan import entropy_weights

    g = torch.tensor([[0.9, 0.1], [0.5, 0.5], [0.99, 0.01], [0.6, 0.4], [0.3, 0.7]])
    w = entropy_weights(g, 2).tolist()
    raw = [1 + math.exp(sum(p * math.log(p) for p in row)) for row in g.tolist()]
    want = [raw[0] / (raw[0] + raw[1]) / 2, raw[1] / (raw[0] + raw[1]) / 2] + \
        [r / sum(raw[2:]) / 2 for r in raw[2:]]
    assert w == pytest.approx(want, rel=1e-6)
    assert w[0] > w[1]  # the confident example weighs more (1 + exp(-H))
    assert sum(w[:2]) == pytest.approx(0.5) and sum(w[2:]) == pytest.approx(0.5)


def test_cdan_e_loss_is_the_entropy_weighted_bce():
    m = make("cdan_e")
    m.eval()
    b = rand_batch()
    dom = m.losses(b)["dom"]
    with torch.no_grad():
        f = m.features(torch.cat([b["src_x"], b["tgt_x"]]))
        g = torch.softmax(m.classifier(f), 1)
        d = m.discriminator(m.condition(f, g)).squeeze(1)
    y = [0.0] * 8 + [1.0] * 8
    h = [-sum(p * math.log(p) for p in row) for row in g.tolist()]
    w = [1 + math.exp(-e) for e in h]
    bce = [-(yi * math.log(torch.sigmoid(di).item()) + (1 - yi) * math.log(1 - torch.sigmoid(di).item()))
           for yi, di in zip(y, d)]
    want = 0.5 * sum(wi * li for wi, li in zip(w[:8], bce[:8])) / sum(w[:8]) + \
        0.5 * sum(wi * li for wi, li in zip(w[8:], bce[8:])) / sum(w[8:])
    assert float(dom.detach()) == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("name", ["cdan", "cdan_e"])
def test_cdan_reversal_reaches_the_features_not_the_classifier(name, monkeypatch):
    m = make(name)
    m.eval()
    b = rand_batch()
    monkeypatch.setattr(type(m), "lambda_p", property(lambda self: 0.5))
    m.zero_grad()
    m.losses(b)["dom"].backward()
    g_feat = [p.grad.clone() for p in m.features.parameters()]
    g_disc = [p.grad.clone() for p in m.discriminator.parameters()]
    assert all(p.grad is None for p in m.classifier.parameters())  # g conditions D but is not adapted

    from dann.methods.cdan import entropy_weights

    m.zero_grad()  # the same loss without the reversal layer
    ns = len(b["src_x"])
    f = m.features(torch.cat([b["src_x"], b["tgt_x"]]))
    g = torch.softmax(m.classifier(f), 1).detach()
    d = m.discriminator(m.condition(f, g)).squeeze(1)
    y = torch.cat([torch.zeros(ns), torch.ones(ns)])
    per = F.binary_cross_entropy_with_logits(d, y, reduction="none")
    (entropy_weights(g, ns) * per).sum().backward() if name == "cdan_e" else per.mean().backward()
    for a, c in zip(g_feat, m.features.parameters()):
        assert torch.allclose(a, -0.5 * c.grad, atol=1e-7, rtol=1e-4)
    for a, c in zip(g_disc, m.discriminator.parameters()):  # the discriminator learns at full strength
        assert torch.allclose(a, c.grad, atol=1e-7, rtol=1e-4)


# -- MDD ---------------------------------------------------------------------------------------
def test_mdd_disparity_matches_direct_computation():
    from dann.methods.mdd import margin_disparity

    g = torch.Generator().manual_seed(3)
    adv_s, adv_t, ls, lt = (torch.randn(4, 3, generator=g, dtype=torch.float64) for _ in range(4))
    hs, ht = ls.argmax(1).tolist(), lt.argmax(1).tolist()

    def softmax(row):
        e = [math.exp(v) for v in row]
        return [v / sum(e) for v in e]

    src = sum(-math.log(softmax(r)[h]) for r, h in zip(adv_s.tolist(), hs)) / 4
    tgt = sum(-math.log(1 - softmax(r)[h]) for r, h in zip(adv_t.tolist(), ht)) / 4
    assert float(margin_disparity(adv_s, adv_t, ls, lt, 4.0)) == pytest.approx(4 * src + tgt, rel=1e-10)


def test_mdd_reversal_reaches_the_features_the_adversary_learns_the_classifier_does_not(monkeypatch):
    m = make("mdd")
    m.eval()
    b = rand_batch()
    monkeypatch.setattr(type(m), "coeff", property(lambda self: 0.25))
    m.zero_grad()
    m.losses(b)["mdd"].backward()
    g_feat = [p.grad.clone() for p in m.features.parameters()]
    g_adv = [p.grad.clone() for p in m.discriminator.parameters()]
    assert all(p.grad is None for p in m.classifier.parameters())  # h = argmax: no adversarial gradient

    from dann.methods.mdd import margin_disparity

    m.zero_grad()
    ns = len(b["src_x"])
    f = m.features(torch.cat([b["src_x"], b["tgt_x"]]))
    logits, adv = m.classifier(f), m.discriminator(f)
    margin_disparity(adv[:ns], adv[ns:], logits[:ns], logits[ns:], 4.0).backward()
    for a, c in zip(g_feat, m.features.parameters()):
        assert torch.allclose(a, -0.25 * c.grad, atol=1e-7, rtol=1e-4)
    for a, c in zip(g_adv, m.discriminator.parameters()):
        assert torch.allclose(a, c.grad, atol=1e-7, rtol=1e-4)


def test_mdd_coefficient_is_eta_times_lambda_p(monkeypatch):
    from dann.methods.schedules import adaptation_factor

    m = make("mdd", eta=0.1, gamma=10.0)
    assert m.coeff == 0.0  # p = 0
    monkeypatch.setattr(type(m), "p", property(lambda self: 0.5))
    assert m.coeff == pytest.approx(0.1 * adaptation_factor(0.5, 10.0))


# -- MCC ---------------------------------------------------------------------------------------
def test_mcc_confusion_matrix_matches_direct_computation():
    from dann.methods.mcc import class_confusion, mcc_loss

    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-1.0, 3.0, 0.0], [1.0, 1.0, -2.0]])
    T, B, K = 2.5, 4, 3
    y = np.exp(logits.numpy() / T)
    y /= y.sum(1, keepdims=True)
    h = -(y * np.log(y)).sum(1)
    w = B * (1 + np.exp(-h)) / (1 + np.exp(-h)).sum()
    c = np.zeros((K, K))
    for i in range(B):
        for j in range(K):
            for jj in range(K):
                c[j, jj] += y[i, j] * w[i] * y[i, jj]
    c /= c.sum(1, keepdims=True)
    np.testing.assert_allclose(class_confusion(logits, T).numpy(), c, rtol=1e-5)
    assert float(mcc_loss(logits, T)) == pytest.approx((c.sum() - np.trace(c)) / K, rel=1e-5)


def test_mcc_is_zero_for_confident_distinct_predictions_and_large_for_uniform_ones():
    from dann.methods.mcc import mcc_loss

    assert float(mcc_loss(torch.eye(4) * 100, 2.5)) == pytest.approx(0.0, abs=1e-6)
    assert float(mcc_loss(torch.zeros(6, 4), 2.5)) == pytest.approx(3 / 4)


# -- MCD ---------------------------------------------------------------------------------------
def test_mcd_discrepancy_is_the_mean_l1_of_probabilities():
    from dann.methods.mcd import discrepancy

    l1, l2 = torch.tensor([[1.0, 0.0, -1.0], [0.0, 2.0, 0.0]]), torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 1.0]])
    p1, p2 = torch.softmax(l1, 1).tolist(), torch.softmax(l2, 1).tolist()
    want = sum(abs(a - b) for r1, r2 in zip(p1, p2) for a, b in zip(r1, r2)) / (2 * 3)
    assert float(discrepancy(l1, l2)) == pytest.approx(want, rel=1e-6)


# -- manual optimization through a real Trainer ---------------------------------------------------
def snapshot(m):
    return {k: v.detach().clone() for k, v in m.named_parameters()}


def changed(before, after, prefix):
    keys = [k for k in before if k.startswith(prefix + ".")]
    assert keys, prefix
    return any(not torch.equal(before[k], after[k]) for k in keys)


@contextmanager
def recorded_updates():
    """Every ``update`` of a manual method: (optimizers stepped, parameters before, after)."""
    calls = []
    original = DAMethod.update

    def update(self, loss, *which):
        before = snapshot(self)
        original(self, loss, *which)
        calls.append((which, before, snapshot(self)))

    with mock.patch.object(DAMethod, "update", update):
        yield calls


def fit(model, steps, batch=None):
    batch = batch or rand_batch()
    trainer = pl.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", num_sanity_val_steps=0, limit_val_batches=0)
    # batch_size=None: the loader hands each item over as it is (one dict = one batch)
    trainer.fit(model, train_dataloaders=torch.utils.data.DataLoader([batch] * steps, batch_size=None))
    return trainer


def test_mcd_three_steps_update_the_right_parts():
    m = make("mcd", num_k=3)
    with recorded_updates() as calls:
        trainer = fit(m, 1)
    assert trainer.global_step == 1  # one step per batch, whatever the updates
    assert [w for w, _, _ in calls] == [(0, 1), (1,), (0,), (0,), (0,)]
    (_, a0, a1), (_, b0, b1), *c = calls
    assert changed(a0, a1, "features") and changed(a0, a1, "classifier") and changed(a0, a1, "classifier2")
    # B: the classifiers move, the feature extractor gets no update
    assert not changed(b0, b1, "features") and changed(b0, b1, "classifier") and changed(b0, b1, "classifier2")
    # C: the feature extractor moves, the classifiers get none
    for _, c0, c1 in c:
        assert changed(c0, c1, "features") and not changed(c0, c1, "classifier") and not changed(c0, c1, "classifier2")


def test_mcd_step_b_maximises_the_discrepancy_and_c_minimises_it():
    from dann.methods.mcd import discrepancy

    m = make("mcd", num_k=1)
    m.hparams.lr = 0.5  # big steps on one batch: the sign of each move shows
    b = rand_batch()
    seen = []
    with recorded_updates() as calls:
        fit(m, 1, b)
    for _, before, after in calls[1:]:
        vals = []
        for state in (before, after):
            with torch.no_grad():
                m.load_state_dict({**m.state_dict(), **state})
                f = m.features(b["tgt_x"])
                vals.append(float(discrepancy(m.classifier(f), m.classifier2(f))))
        seen.append(vals)
    (b_before, b_after), (c_before, c_after) = seen
    assert b_after > b_before and c_after < c_before


def test_adda_stage_2_freezes_source_encoder_and_classifier():
    m = make("adda", max_steps=4)  # stage 1: steps 0, 1; stage 2: steps 2, 3
    with recorded_updates() as calls:
        fit(m, 4)
    assert [w for w, _, _ in calls] == [(0,), (0,), (2,), (1,), (2,), (1,)]
    for _, s0, s1 in calls[:2]:  # stage 1: M_s (= features) and C learn on the source
        assert changed(s0, s1, "features") and changed(s0, s1, "classifier")
        assert not changed(s0, s1, "discriminator") and not changed(s0, s1, "source_features")
    end_of_stage_1 = calls[1][2]
    # stage 2 starts with M_t = M_s = the stage-1 encoder
    first = calls[2][1]
    for k in [k for k in first if k.startswith("features.")]:
        assert torch.equal(first["source_" + k], end_of_stage_1[k]) and torch.equal(first[k], end_of_stage_1[k])
    for which, s0, s1 in calls[2:]:
        assert not changed(s0, s1, "source_features") and not changed(s0, s1, "classifier")
        if which == (2,):  # the discriminator step
            assert changed(s0, s1, "discriminator") and not changed(s0, s1, "features")
        else:  # the target encoder step (inverted labels)
            assert changed(s0, s1, "features") and not changed(s0, s1, "discriminator")
    # the evaluated model is C(M_t(x)): the trained target encoder and the frozen classifier
    assert not torch.equal(m.features[1].weight, m.source_features[1].weight)
    x = torch.randn(3, 2)
    assert torch.equal(m(x), m.classifier(m.features(x)))


def test_adda_mapping_step_fools_the_discriminator():
    m = make("adda", max_steps=2, source_fraction=0.0)
    b = rand_batch()
    with recorded_updates() as calls:
        fit(m, 1, b)
    (_, _, d_after), (_, t_before, t_after) = calls
    outs = []
    for state in (t_before, t_after):
        with torch.no_grad():
            m.load_state_dict({**m.state_dict(), **state})
            outs.append(float(torch.sigmoid(m.discriminator(m.features(b["tgt_x"]))).mean()))
    assert outs[1] < outs[0]  # P(target) of the target features drops: D is fooled toward "source"


@pytest.mark.parametrize("name", ["mcd", "adda"])
def test_adam_option_is_the_papers_and_keeps_a_constant_rate(name):
    m = make(name, optimizer="adam", max_steps=4)
    trainer = fit(m, 2)
    opts = [o.optimizer for o in trainer.optimizers] if hasattr(trainer.optimizers[0], "optimizer") else trainer.optimizers
    assert all(isinstance(o, torch.optim.Adam) for o in opts)
    lrs = [g["lr"] for o in opts for g in o.param_groups]
    assert lrs == ([2e-4, 2e-4] if name == "mcd" else [1e-3, 2e-4, 2e-4])
    if name == "adda":
        assert [g["betas"][0] for o in opts for g in o.param_groups] == [0.9, 0.5, 0.5]
    assert m.lr_factor(3) == 1.0


# -- options are validated before any data loads ----------------------------------------------------
@pytest.mark.parametrize("override, key", [
    ("method=dan method.estimator=cubic", "method.estimator"),
    ("method=dan method.multipliers=[]", "method.multipliers"),
    ("method=coral method.layer=conv1", "method.layer"),
    ("method=cdan method.random_dim=0", "method.random_dim"),
    ("method=mdd method.margin=0", "method.margin"),
    ("method=mcc method.temperature=0", "method.temperature"),
    ("method=mcd method.num_k=0", "method.num_k"),
    ("method=mcd method.optimizer=rmsprop", "method.optimizer"),
    ("method=adda method.source_fraction=1.5", "method.source_fraction"),
    ("method=adda method.discriminator=big", "method.discriminator"),
    ("method=mcc +method.tempreature=2", "method.tempreature"),
])
def test_bad_option_is_refused_naming_the_key(tmp_path, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(make_cfg(tmp_path, *override.split()))


def test_every_method_composes_with_the_paper_table_experiment(tmp_path):
    from hydra import compose, initialize_config_dir

    for m in NEW:
        with initialize_config_dir(CONF_DIR, version_base="1.3"):
            cfg = compose("train", overrides=[f"output_dir={tmp_path}", "experiment=paper_table", f"method={m}"])
        if needs_start(m):  # refused until it names the run it starts from
            with pytest.raises(ConfigError, match=r"method\.start is not set"):
                validate(cfg)
        else:
            validate(cfg)
        assert cfg.method.name == m


@pytest.mark.slow
def test_paper_table_sweeps_over_every_method(tmp_path):
    """`dann-train -m experiment=paper_table method=<all>`, shrunk to one pair, one seed, two steps."""
    env = dict(os.environ, WANDB_MODE="disabled")
    swept = [m for m in NEW if not needs_start(m)]  # a start run is per seed: not one sweep's
    p = subprocess.run([sys.executable, "-m", "dann.run.train", "-m", "experiment=paper_table", f"method={','.join(swept)}",
                        "pair=moons", "seed=0", "trainer.max_steps=2", "trainer.val_check_interval=2",
                        "probe.enabled=false", "logger=none", "checkpoint.keep=false", "trainer.enable_progress_bar=false",
                        f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    recs = [json.loads(f.read_text()) for f in sorted((tmp_path / "sweep").glob("*/results.json"))]
    assert sorted(r["method"] for r in recs) == sorted(swept)
    assert all(r["status"] == "finished" and r["steps"] == 2 for r in recs)


# -- end to end: every method on the moons ---------------------------------------------------------
RUN = ["pair=moons", "trainer.max_steps=30", "trainer.val_check_interval=10", "checkpoint.every_n_steps=10",
       "trainer.log_every_n_steps=5", "deterministic=true"]


class SendSignalAt(pl.Callback):
    """A real SIGTERM after step ``k`` (what SLURM's pre-emption sends)."""

    def __init__(self, k: int):
        self.k = k

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.k:
            os.kill(os.getpid(), signal.SIGTERM)


@contextmanager
def target_labels_hidden():
    """Every training batch's ``tgt_y`` replaced by -1 (a method that reads it fails or changes)."""
    original = PairBatches.__iter__

    def batches(self):
        for b in original(self):
            yield {**b, "tgt_y": torch.full_like(b["tgt_y"], -1)}

    with mock.patch.object(PairBatches, "__iter__", batches):
        yield


def start_of(name: str, runs) -> list[str]:
    """``method.start=`` the finished run ``name`` starts from (one of ``runs``, the full runs), if any."""
    if not needs_start(name):
        return []
    return [f"method.start={runs(method_class({'name': name}).start_methods[0])[1]}"]


@pytest.fixture(scope="module")
def full_runs(tmp_path_factory):
    """Uninterrupted runs, target labels hidden, W&B offline: computed once per method, on demand."""
    root = tmp_path_factory.mktemp("full")
    cache: dict[str, tuple[dict, object]] = {}

    def get(name: str):
        if name not in cache:
            from dann.run.train import train

            start = start_of(name, get)
            out = root / f"{name}_s0"
            with mock.patch.dict(os.environ, {"WANDB_MODE": "offline", "WANDB_DIR": str(out)}), \
                    target_labels_hidden():
                rec = train(make_cfg(out, f"method={name}", *RUN, *start, "logger=default", "logger.wandb.group=unit"))
            cache[name] = (rec, out)
        return cache[name]

    return get


@pytest.mark.parametrize("name", NEW)
def test_trains_without_target_labels_and_writes_a_complete_record(name, full_runs):
    rec, out = full_runs(name)
    on_disk = json.loads((out / "results.json").read_text())
    assert all(k in on_disk for k in REQUIRED_KEYS)
    assert on_disk["status"] == "finished" and on_disk["steps"] == 30 and on_disk["method"] == name
    assert on_disk["metrics"] == rec["metrics"]
    assert all(0 <= on_disk["metrics"][k] <= 1 for k in ("test/src_acc", "test/tgt_acc"))
    assert any(k.startswith("select/") for k in on_disk["metrics"])
    rows = [json.loads(line) for line in (out / "evaluations.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [10, 20, 30]  # the selection probe ran at every evaluation
    logged = [r for r in csv.DictReader((out / "metrics.csv").open()) if r.get("train/loss")]
    assert {f"train/{t}" for t in TERMS[name]} <= set(logged[0])
    for r in logged:
        for t in ("loss", *TERMS[name]):
            assert math.isfinite(float(r[f"train/{t}"])), (r["step"], t, r)
    assert (out / "learning_curves.png").exists()


@pytest.mark.parametrize("name", NEW)
def test_wandb_offline_run_has_the_method_and_its_terms(name, full_runs):
    from dann.report.wandb_offline import read_offline_run

    rec, out = full_runs(name)
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    import wandb

    wandb.teardown()  # the run's file is complete once its stream closes, which finish() does not wait for
    run = read_offline_run(runs[0])
    assert run["job_type"] == name and run["config"]["method.name"] == name
    assert run["summary"]["test/tgt_acc"] == pytest.approx(rec["metrics"]["test/tgt_acc"])
    keys = {k for h in run["history"] for k in h}
    assert {f"train/{t}" for t in TERMS[name]} <= keys


def test_table_has_a_row_per_method(full_runs, capsys):
    from dann.report.cli import main as table

    dirs = [str(full_runs(m)[1]) for m in NEW]
    assert table(dirs) == 0
    rows = {line.split("|")[1].strip() for line in capsys.readouterr().out.splitlines() if line.startswith("| ")}
    assert set(NEW) <= rows, rows


# adda, shot: 15 = the stage switch, crossed before or after the cut
CUTS = [(m, 17) for m in NEW] + [("adda", 13), ("shot", 13)]


@pytest.mark.parametrize("name, cut", CUTS)
def test_resume_equals_an_uninterrupted_run_that_never_saw_target_labels(name, cut, full_runs, tmp_path):
    from dann.run.train import train
    from dann.selection import read_evaluations

    full, full_dir = full_runs(name)
    start = start_of(name, full_runs)
    cfg = lambda *extra: make_cfg(tmp_path / "cut", f"method={name}", *RUN, *start, "logger=csv", *extra)  # noqa: E731
    with pytest.raises((SystemExit, KeyboardInterrupt)):
        train(cfg(), callbacks=[SendSignalAt(cut)])
    rec = json.loads((tmp_path / "cut" / "results.json").read_text())
    assert rec["status"] == "interrupted" and rec["steps"] == cut, rec
    resumed = train(cfg("resume=auto"))
    assert resumed["resumed_from"].endswith("last.ckpt") and resumed["steps"] == 30
    # bitwise: the same seed on a deterministic CPU; the uninterrupted run had target labels -1
    assert resumed["metrics"] == full["metrics"]
    assert read_evaluations(tmp_path / "cut") == read_evaluations(full_dir)


@pytest.mark.parametrize("name", NEW)
def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(name, tmp_path, request):
    from dann.run.train import train

    cls = method_class({"name": name})
    original = cls.losses
    start = start_of(name, request.getfixturevalue("full_runs")) if needs_start(name) else []

    def losses_with_nan_input_at_12(self, batch):
        if self.global_step == 12:  # both domains' inputs: a source-free stage reads the target's only
            batch = {**batch, "src_x": batch["src_x"] * float("nan"), "tgt_x": batch["tgt_x"] * float("nan")}
        return original(self, batch)

    run = ["pair=moons", "trainer.max_steps=20", "trainer.val_check_interval=20", "checkpoint.every_n_steps=5",
           "trainer.log_every_n_steps=5", "logger=none", "probe.enabled=false"]
    with mock.patch.object(cls, "losses", losses_with_nan_input_at_12):
        with pytest.raises(Exception, match=r"non-finite loss at step 12: loss=nan"):
            train(make_cfg(tmp_path / "run", f"method={name}", *run, *start))
    rec = json.loads((tmp_path / "run" / "results.json").read_text())
    assert rec["status"] == "failed" and "NonFiniteLossError" in rec["error"]
    ckpt = torch.load(rec["last_checkpoint"], weights_only=False)
    assert ckpt["global_step"] == 10
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_mdd_target_term_stays_exact_and_trainable_where_the_adversary_is_certain():
    from dann.methods.mdd import log_one_minus_softmax

    logits = torch.tensor([[30.0, 0.0, 0.0], [0.0, 1.0, 2.0]], requires_grad=True)
    h = torch.tensor([0, 2])
    v = log_one_minus_softmax(logits, h)
    # 1 - p rounds to 0 in float32 for row 0; the exact value is log(2 e^0) - log(e^30 + 2)
    assert float(v[0]) == pytest.approx(math.log(2) - math.log(math.exp(30) + 2), rel=1e-6)
    p = torch.softmax(logits.detach().double(), 1)
    assert float(v[1]) == pytest.approx(math.log(1 - float(p[1, 2])), rel=1e-6)
    v.sum().backward()
    # d/dz_h log(1 - p_h) = -p_h: bounded, and not zero where the adversary is certain and wrong
    assert float(logits.grad[0, 0]) == pytest.approx(-1.0, abs=1e-6)
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name", ["dan", "coral"])
def test_the_hidden_layer_is_the_label_predictors_last_hidden_activation(name):
    """layer=hidden aligns fc7's place: the input of the label predictor's last linear layer."""
    from dann.methods.dan import DAN
    from dann.methods.coral import CORAL
    from dann.models import build_nets

    cls = {"dan": DAN, "coral": CORAL}[name]
    torch.manual_seed(0)
    m = cls(build_nets("mnist", (3, 32, 32), 10), num_classes=10, max_steps=10, layer="hidden")
    batch = {"src_x": torch.randn(4, 3, 32, 32), "tgt_x": torch.randn(4, 3, 32, 32)}
    z, logits, ns = m.aligned_pass(batch, "hidden")
    f = m.features(torch.cat([batch["src_x"], batch["tgt_x"]]))
    assert z.shape == (8, 100) and ns == 4
    assert torch.equal(z, m.classifier[:-1](f)) and torch.equal(logits, m.classifier(f))
    assert torch.equal(m.aligned_pass(batch, "features")[0], f)
    assert torch.equal(m.aligned_pass(batch, "logits")[0], m.classifier(f))
