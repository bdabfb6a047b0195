"""The methods of issue #32 (VADA, DIRT-T, self-ensembling, SHOT, BSP, AFN, BNM, JAN) and the
facilities they share: a teacher (a frozen copy, refreshed or moved by an exponential moving
average), on-device augmentation, a start from another run's network (``method.start``).

Each loss against a direct computation on tiny tensors (loops / numpy, written here), VAT's
perturbation against finite differences, the teacher's update exactly, the source-free stages
watched for every key they read, and the refusals of a start that cannot be used. The
end-to-end tests every method goes through (record, W&B, table, NaN guard, resume) are
tests/test_methods_da.py's, parametrised over these methods too.
"""

from __future__ import annotations

import inspect
import json
import math
import shutil
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from conftest import make_cfg
from dann.config import CONF_DIR, method_class, method_names, method_options, validate
from dann.errors import ConfigError
from test_methods_da import make, rand_batch

SHORT = ["pair=moons", "trainer.max_steps=20", "trainer.val_check_interval=10", "checkpoint.every_n_steps=10",
         "trainer.log_every_n_steps=5", "probe.enabled=false", "logger=none"]


def fit(model, steps, batch=None, callbacks=()):
    batch = batch or rand_batch()
    trainer = pl.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", num_sanity_val_steps=0, limit_val_batches=0,
                         callbacks=list(callbacks))
    trainer.fit(model, train_dataloaders=torch.utils.data.DataLoader([batch] * steps, batch_size=None))
    return trainer


def softmax(row):
    e = [math.exp(v - max(row)) for v in row]
    return [v / sum(e) for v in e]


# -- every option of a method is an option (none swallowed by the base's arguments) ------------
@pytest.mark.parametrize("name", method_names())
def test_every_keyword_of_a_method_is_an_option_and_its_yaml_sets_them_all(name):
    """A keyword-only argument named like one of the base's (``beta``: the learning-rate annealing)
    would silently never be set from the yaml."""
    cls = method_class({"name": name})
    kw = {n for k in cls.__mro__ if isinstance(k, type) and "__init__" in vars(k)
          for n, p in inspect.signature(k.__init__).parameters.items() if p.kind == p.KEYWORD_ONLY}
    assert kw == set(cls.option_defaults()), name
    conf = OmegaConf.to_container(OmegaConf.load(f"{CONF_DIR}/method/{name}.yaml"))
    assert set(method_options(conf)) == set(cls.option_defaults()), name


# -- the teacher ---------------------------------------------------------------------------------
def test_ema_update_is_exact():
    from dann.methods.teacher import ema_update

    t, s = nn.Linear(3, 2), nn.Linear(3, 2)
    t.register_buffer("count", torch.tensor(3))
    s.register_buffer("count", torch.tensor(7))
    with torch.no_grad():  # dyadic values: every product and sum below is exact in float32
        t.weight.copy_(torch.arange(6.0).view(2, 3) / 4)
        t.bias.copy_(torch.tensor([1.0, -2.0]))
        s.weight.copy_(-torch.arange(6.0).view(2, 3) / 8)
        s.bias.copy_(torch.tensor([0.5, 4.0]))
    want = {k: 0.75 * t.state_dict()[k] + 0.25 * s.state_dict()[k] for k in ("weight", "bias")}
    ema_update(t, s, 0.75)
    assert torch.equal(t.weight, want["weight"]) and torch.equal(t.bias, want["bias"])
    assert int(t.count) == 7  # an integer buffer is copied
    assert not t.weight.requires_grad or t.weight.grad is None


def test_ema_update_converges_geometrically_to_a_fixed_student():
    from dann.methods.teacher import ema_update

    torch.manual_seed(0)
    t, s = nn.Linear(4, 3).double(), nn.Linear(4, 3).double()
    t0 = t.weight.detach().clone()
    for _ in range(10):
        ema_update(t, s, 0.9)
    # t_n = s + 0.9^n (t_0 - s)
    assert torch.allclose(t.weight, s.weight + 0.9 ** 10 * (t0 - s.weight), rtol=1e-12, atol=1e-14)


def test_refresh_copies_exactly_and_refuses_another_architecture():
    from dann.methods.teacher import copy_of, refresh

    torch.manual_seed(0)
    s = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    t = copy_of(s)
    assert all(not p.requires_grad for p in t.parameters())
    with torch.no_grad():
        s[0].weight.add_(1.0)
    refresh(t, s)
    assert all(torch.equal(a, b) for a, b in zip(t.state_dict().values(), s.state_dict().values()))
    with pytest.raises(ValueError, match="same architecture"):
        refresh(nn.Linear(3, 5), s)


# -- augmentation -----------------------------------------------------------------------------------
def test_augment_draws_from_the_global_generator_and_is_the_identity_without_randomness():
    from dann.methods.augment import augment

    x = torch.rand(4, 3, 8, 8)
    assert torch.allclose(augment(x, 0.0, 0.0, 0.0), x, atol=1e-6)
    torch.manual_seed(5)
    a = augment(x, affine_std=0.1)
    state = torch.get_rng_state()
    torch.manual_seed(5)
    b = augment(x, affine_std=0.1)
    assert torch.equal(a, b) and not torch.equal(a, x)
    assert torch.equal(torch.get_rng_state(), state)  # the same draws, from torch's global generator
    v = torch.rand(500, 2)
    torch.manual_seed(0)
    nv = augment(v, noise_std=0.1)
    assert nv.shape == v.shape and float((nv - v).std()) == pytest.approx(0.1, rel=0.1)  # vectors: noise only
    # images: noise of 0.1 x each image's own std (the authors standardise each image, then add 0.1)
    img = torch.cat([0.05 * torch.randn(1, 3, 16, 16), 2.0 * torch.randn(1, 3, 16, 16)])
    torch.manual_seed(0)
    noise = augment(img, max_shift=0.0, noise_std=0.1) - img
    assert float(noise[0].std()) == pytest.approx(0.1 * float(img[0].std()), rel=0.1)
    assert float(noise[1].std()) == pytest.approx(0.1 * float(img[1].std()), rel=0.1)


def test_augment_translates_by_at_most_max_shift_pixels():
    from dann.methods.augment import augment

    x = torch.zeros(400, 1, 32, 32)
    x[:, :, 12:20, 12:20] = 1.0  # a square centred at (15.5, 15.5)
    torch.manual_seed(0)
    y = augment(x, max_shift=2.0, affine_std=0.0, noise_std=0.0)
    grid = torch.arange(32.0)
    mass = y.sum((1, 2, 3))
    cx = (y.sum((1, 2)) * grid).sum(1) / mass
    cy = (y.sum((1, 3)) * grid).sum(1) / mass
    shift = torch.stack([cx - 15.5, cy - 15.5], 1)
    assert shift.abs().max() <= 2.0 + 1e-4
    assert shift.abs().max() > 1.5 and shift.std(0).min() > 0.8  # spread over +-2, uniformly (std 2/sqrt(3))


# -- VADA's pieces: conditional entropy, KL, VAT ----------------------------------------------------
def test_conditional_entropy_and_kl_match_direct_sums():
    from dann.methods.vada import conditional_entropy, kl_rows

    a = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 2.0]], dtype=torch.float64)
    b = torch.tensor([[0.0, 0.2, 0.1], [-1.0, 3.0, 0.0]], dtype=torch.float64)
    pa, pb = [softmax(r) for r in a.tolist()], [softmax(r) for r in b.tolist()]
    ent = sum(-sum(p * math.log(p) for p in row) for row in pa) / 2
    assert float(conditional_entropy(a)) == pytest.approx(ent, rel=1e-12)
    kl = [sum(p * math.log(p / q) for p, q in zip(r, s)) for r, s in zip(pa, pb)]
    assert kl_rows(a, b).tolist() == pytest.approx(kl, rel=1e-12)


def test_vat_perturbation_is_the_finite_difference_gradient_direction():
    """``r_adv = radius * g / ||g||`` with ``g`` the gradient of ``KL(p(x) || p(x + r))`` at the random
    start ``r = xi u / ||u||``, computed here by central differences, coordinate by coordinate."""
    from dann.methods.vada import kl_rows, unit, vat_perturbation

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    x = torch.randn(5, 4, dtype=torch.float64)
    with torch.no_grad():
        logits = net(x)
    radius, xi, h = 0.5, 1e-2, 1e-6
    torch.manual_seed(7)
    r = vat_perturbation(net, x, logits, radius, xi)
    torch.manual_seed(7)
    r0 = xi * unit(torch.randn_like(x))  # the same start: the first draw of the generator
    g = torch.zeros_like(x)
    with torch.no_grad():
        for j in range(x.shape[1]):
            e = torch.zeros_like(x)
            e[:, j] = h
            g[:, j] = (kl_rows(logits, net(x + r0 + e)) - kl_rows(logits, net(x + r0 - e))) / (2 * h)
    want = radius * g / g.norm(dim=1, keepdim=True)
    assert torch.allclose(r, want, rtol=1e-5, atol=1e-8)
    assert torch.allclose(r.norm(dim=1), torch.full((5,), radius, dtype=torch.float64))
    # the direction is adversarial: the prediction moves more along it than along random ones
    with torch.no_grad():
        adv = kl_rows(logits, net(x + r))
        rnd = torch.stack([kl_rows(logits, net(x + radius * unit(torch.randn_like(x)))) for _ in range(20)])
    assert (adv > rnd.median(0).values).all()


def test_vat_loss_reaches_the_network_only_through_the_perturbed_prediction():
    from dann.methods.vada import vat_rows

    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    x = torch.randn(4, 3)
    logits = net(x)
    logits.retain_grad()
    vat_rows(net, x, logits, 1.0, 0.01).sum().backward()
    assert logits.grad is None and net.weight.grad is not None


def test_vada_terms_match_a_direct_computation():
    from dann.methods.vada import conditional_entropy, kl_rows, vat_perturbation

    m = make("vada", src_vat_weight=0.5, tgt_weight=0.2, radius=0.3)
    m.eval()
    b = rand_batch()
    torch.manual_seed(3)
    terms = m.losses(b)
    assert set(terms) == {"cls", "dom", "ent", "vat_src", "vat_tgt"}
    x = torch.cat([b["src_x"], b["tgt_x"]])
    with torch.no_grad():
        f = m.features(x)
        logits = m.classifier(f)
        d = m.discriminator(f).squeeze(1)
    torch.manual_seed(3)
    r = vat_perturbation(m, x, logits, 0.3, 0.01)
    with torch.no_grad():
        vat = kl_rows(logits, m(x + r))
    y = torch.cat([torch.zeros(8), torch.ones(8)])
    assert float(terms["cls"]) == pytest.approx(float(F.cross_entropy(logits[:8], b["src_y"])), rel=1e-6)
    assert float(terms["dom"]) == pytest.approx(float(F.binary_cross_entropy_with_logits(d, y)), rel=1e-6)
    assert float(terms["ent"]) == pytest.approx(0.2 * float(conditional_entropy(logits[8:])), rel=1e-6)
    assert float(terms["vat_src"]) == pytest.approx(0.5 * float(vat[:8].mean()), rel=1e-5)
    assert float(terms["vat_tgt"]) == pytest.approx(0.2 * float(vat[8:].mean()), rel=1e-5)


def test_vada_reversal_scales_the_domain_gradient_at_the_features_by_the_domain_weight():
    m = make("vada", domain_weight=0.25)
    m.eval()
    b = rand_batch()
    m.zero_grad()
    m.losses(b)["dom"].backward()
    g_rev = [p.grad.clone() for p in m.features.parameters()]
    g_disc = [p.grad.clone() for p in m.discriminator.parameters()]
    m.zero_grad()
    f = m.features(torch.cat([b["src_x"], b["tgt_x"]]))
    y = torch.cat([torch.zeros(8), torch.ones(8)])
    F.binary_cross_entropy_with_logits(m.discriminator(f).squeeze(1), y).backward()
    for a, c in zip(g_rev, m.features.parameters()):
        assert torch.allclose(a, -0.25 * c.grad, atol=1e-7, rtol=1e-4)
    for a, c in zip(g_disc, m.discriminator.parameters()):  # the domain classifier at full strength
        assert torch.allclose(a, c.grad, atol=1e-7, rtol=1e-4)


def test_vada_without_source_vat_runs_vat_on_the_target_rows_only():
    m = make("vada", src_vat_weight=0.0)
    calls = []
    original = m.forward

    def forward(x):
        calls.append(len(x))
        return original(x)

    with mock.patch.object(m, "forward", forward):
        terms = m.losses(rand_batch())
    assert float(terms["vat_src"]) == 0.0 and calls == [8, 8]  # VAT's two passes: the 8 target rows


# -- DIRT-T ----------------------------------------------------------------------------------------
def test_dirt_t_kl_is_to_the_teacher_and_zero_right_after_a_refresh():
    from dann.methods.teacher import Network, refresh
    from dann.methods.vada import conditional_entropy, kl_rows

    m = make("dirt_t", teacher_every=5)
    m.eval()
    b = rand_batch()
    torch.manual_seed(0)
    terms = m.losses(b)  # step 0: the teacher is refreshed, so KL(teacher || network) = 0
    assert set(terms) == {"kl", "ent", "vat"} and float(terms["kl"]) == 0.0
    with torch.no_grad():
        for p in m.features.parameters():
            p.add_(0.3)
    teacher = m.teacher
    with torch.no_grad():
        want = kl_rows(teacher(b["tgt_x"]), m(b["tgt_x"])).mean()
        ent = conditional_entropy(m(b["tgt_x"]))
    with mock.patch.object(type(m), "global_step", property(lambda self: 3)):  # no refresh at step 3
        terms = m.losses(b)
    assert float(terms["kl"]) == pytest.approx(float(want), rel=1e-6) and float(want) > 0
    assert float(terms["ent"]) == pytest.approx(float(ent), rel=1e-6)
    refresh(teacher, Network(m.features, m.classifier))
    assert float(kl_rows(teacher(b["tgt_x"]), m(b["tgt_x"])).mean()) == 0.0


def test_dirt_t_refreshes_the_teacher_on_its_schedule():
    m = make("dirt_t", teacher_every=3)
    seen = []

    class Watch(pl.Callback):
        def on_train_batch_start(self, trainer, module, *a):
            self.before = {k: v.clone() for k, v in module.features.state_dict().items()}
            self.teacher = {k: v.clone() for k, v in module.teacher.features.state_dict().items()}

        def on_train_batch_end(self, trainer, module, *a):
            now = module.teacher.features.state_dict()
            refreshed = all(torch.equal(now[k], self.before[k]) for k in now)
            kept = all(torch.equal(now[k], self.teacher[k]) for k in now)
            seen.append((trainer.global_step - 1, refreshed, kept))

    fit(m, 7, callbacks=[Watch()])
    # steps 0, 3, 6: the teacher is the network as it was before the step; between them it is kept
    assert [s for s, _, _ in seen] == list(range(7))
    assert all(refreshed for s, refreshed, _ in seen if s % 3 == 0)
    assert all(kept and not refreshed for s, refreshed, kept in seen if s % 3)


# -- self-ensembling --------------------------------------------------------------------------------
def test_self_ensembling_consistency_and_class_balance_match_direct_loops():
    from dann.methods.self_ensembling import class_balance, consistency

    s = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.4, 0.3]])
    t = torch.tensor([[0.98, 0.01, 0.01], [0.2, 0.2, 0.6], [0.005, 0.99, 0.005]])
    cons, mask = consistency(s, t, 0.96837722)
    m = [1.0, 0.0, 1.0]
    want = sum(mi * sum((a - b) ** 2 for a, b in zip(si, ti)) / 3 for mi, si, ti in zip(m, s.tolist(), t.tolist())) / 3
    assert mask.tolist() == m and float(cons) == pytest.approx(want, rel=1e-6)
    mean = [sum(col) / 3 for col in zip(*s.tolist())]
    bce = sum(-(1 / 3 * math.log(p + 1e-6) + 2 / 3 * math.log(1 - p + 1e-6)) for p in mean)
    assert float(class_balance(s, mask)) == pytest.approx(bce * 2 / 3, rel=1e-6)


def test_self_ensembling_teacher_follows_the_student_after_each_step_and_is_what_is_evaluated():
    m = make("self_ensembling", teacher_decay=0.9)
    # the teacher starts as the student
    assert all(torch.equal(a, b) for a, b in zip(m.features.state_dict().values(),
                                                 m.student.features.state_dict().values()))
    trained = {id(p) for group in m.optimized_parameters() for p in group}
    assert trained == {id(p) for p in m.student.parameters()}  # the optimizer moves the student only
    seen = []

    class Watch(pl.Callback):  # runs after the step, as the checkpoint callback does
        def on_train_batch_end(self, trainer, module, *a):
            seen.append(({k: v.clone() for k, v in module.features.state_dict().items()},
                         {k: v.clone() for k, v in module.student.features.state_dict().items()}))

    t0 = {k: v.clone() for k, v in m.features.state_dict().items()}
    fit(m, 3, callbacks=[Watch()])
    # after step k: t_k = 0.9 t_{k-1} + 0.1 s_k, with s_k the student after its update of step k
    for (t_prev, _), (t, s) in zip([(t0, None), *seen[:-1]], seen):
        for k in t:
            assert not torch.equal(s[k], t_prev[k])
            assert torch.allclose(t[k], 0.9 * t_prev[k] + 0.1 * s[k], rtol=0, atol=1e-7)
    x = torch.randn(5, 2)
    assert torch.equal(m(x), m.classifier(m.features(x)))  # evaluation reads the teacher
    assert not torch.equal(m(x), m.student(x))


def test_self_ensembling_terms_match_a_direct_computation():
    from dann.methods.augment import augment
    from dann.methods.self_ensembling import class_balance, consistency

    m = make("self_ensembling", confidence=0.5)
    m.eval()
    b = rand_batch()
    torch.manual_seed(4)
    terms = m.losses(b)
    torch.manual_seed(4)
    xs, xt_s, xt_t = augment(b["src_x"]), augment(b["tgt_x"]), augment(b["tgt_x"])
    with torch.no_grad():
        ls = m.student(torch.cat([xs, xt_s]))
        pt = torch.softmax(m.classifier(m.features(xt_t)), 1)
    cons, mask = consistency(torch.softmax(ls[8:], 1), pt, 0.5)
    assert float(terms["cls"]) == pytest.approx(float(F.cross_entropy(ls[:8], b["src_y"])), rel=1e-6)
    assert float(terms["cons"]) == pytest.approx(3.0 * float(cons), rel=1e-6)
    bal = class_balance(torch.softmax(ls[8:], 1), mask)
    assert float(terms["bal"]) == pytest.approx(3.0 * 0.005 * float(bal), rel=1e-6)


# -- SHOT -----------------------------------------------------------------------------------------
def test_information_maximisation_matches_direct_sums():
    from dann.methods.shot import information_maximisation

    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0], [0.5, -0.5, 3.0]], dtype=torch.float64)
    p = [softmax(r) for r in logits.tolist()]
    ent = sum(-sum(v * math.log(v) for v in row) for row in p) / 3
    pm = [sum(col) / 3 for col in zip(*p)]
    div = sum(v * math.log(v + 1e-5) for v in pm)
    assert float(information_maximisation(logits)) == pytest.approx(ent + div, rel=1e-12)


def test_shot_centroids_match_the_papers_two_step_clustering():
    from dann.methods.shot import nearest, shot_centroids, with_bias

    g = torch.Generator().manual_seed(0)
    f = torch.randn(30, 5, generator=g, dtype=torch.float64)
    p = torch.softmax(3 * torch.randn(30, 4, generator=g, dtype=torch.float64), 1)
    c = shot_centroids(lambda: iter([(f[:13], p[:13]), (f[13:], p[13:])]), 4)
    # numpy, as the paper describes it: features with a 1 appended, unit-normalised; soft centroids;
    # nearest by cosine distance; hard centroids
    fa = np.concatenate([f.numpy(), np.ones((30, 1))], 1)
    fa /= np.linalg.norm(fa, axis=1, keepdims=True)
    pn = p.numpy()
    c0 = pn.T @ fa / (pn.sum(0)[:, None] + 1e-8)
    cos = fa @ (c0 / np.linalg.norm(c0, axis=1, keepdims=True)).T
    y0 = cos.argmax(1)
    c1 = np.stack([fa[y0 == k].sum(0) / ((y0 == k).sum() + 1e-8) for k in range(4)])
    np.testing.assert_allclose(c.numpy(), c1, rtol=1e-10, atol=1e-12)
    labels = nearest(with_bias(f), c)
    want = (fa @ (c1 / np.maximum(np.linalg.norm(c1, axis=1, keepdims=True), 1e-12)).T)
    want[:, (c1 == 0).all(1)] = -np.inf
    assert labels.tolist() == want.argmax(1).tolist()
    # a class no example chose is never a pseudo-label
    empty = c.clone()
    empty[2] = 0
    assert 2 not in nearest(with_bias(f), empty).tolist()


def test_shot_learning_rate_anneals_within_each_stage():
    m = make("shot", max_steps=100, source_fraction=0.4)
    assert m.switch_step == 40
    assert m.lr_factor(0) == 1.0 and m.lr_factor(40) == 1.0
    assert m.lr_factor(39) == pytest.approx((1 + 10 * 39 / 40) ** -0.75)
    assert m.lr_factor(70) == pytest.approx((1 + 10 * 30 / 60) ** -0.75)


class Watched(dict):
    """A batch that records which keys were read, and at which step."""

    def __init__(self, batch, step, log):
        super().__init__(batch)
        self.step, self.log = step, log

    def __getitem__(self, key):
        self.log.append((self.step, key))
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.log.append((self.step, key))
        return super().get(key, default)

    def items(self):
        self.log.append((self.step, "*"))
        return super().items()

    def values(self):
        self.log.append((self.step, "*"))
        return super().values()


def watched_losses(cls, log):
    original = cls.losses
    return mock.patch.object(cls, "losses", lambda self, batch: original(self, Watched(batch, self.global_step, log)))


@pytest.fixture(scope="module")
def shot_run(tmp_path_factory):
    """SHOT on the moons, its source stage in the run (steps 0-9), every batch key it reads logged."""
    from dann.run.train import train

    out = tmp_path_factory.mktemp("shot") / "run"
    log: list[tuple[int, str]] = []
    snaps = {}

    class Snap(pl.Callback):
        def on_train_batch_start(self, trainer, module, *a):
            if trainer.global_step == 10:
                snaps["classifier"] = {k: v.clone() for k, v in module.classifier.state_dict().items()}
                snaps["features"] = {k: v.clone() for k, v in module.features.state_dict().items()}

    with watched_losses(method_class({"name": "shot"}), log):
        rec = train(make_cfg(out, "method=shot", *SHORT), callbacks=[Snap()])
    return rec, out, log, snaps


def test_shot_target_stage_reads_no_source_batch_and_no_target_label(shot_run):
    rec, _, log, _ = shot_run
    assert rec["status"] == "finished" and rec["steps"] == 20
    assert {k for s, k in log if s < 10} == {"src_x", "src_y"}  # the source stage (the watch works)
    assert {k for s, k in log if s >= 10} == {"tgt_x"}  # the target stage: target inputs only
    assert not any(k == "tgt_y" for _, k in log)


def test_shot_record_says_source_free_and_the_classifier_stays_frozen(shot_run):
    rec, out, _, snaps = shot_run
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["setting"] == "source-free" and on_disk["source_steps"] == 10
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    state = ckpt["state_dict"]
    for k, v in snaps["classifier"].items():  # the hypothesis is the source stage's, unchanged
        assert torch.equal(state[f"classifier.{k}"], v), k
    assert any(not torch.equal(state[f"features.{k}"], v) for k, v in snaps["features"].items())
    assert state["centroids"].abs().sum() > 0  # the pseudo-labeller ran (and is in the checkpoint)


# -- starts from another run: DIRT-T from VADA, SHOT from source-only --------------------------------
@pytest.fixture(scope="module")
def start_runs(tmp_path_factory):
    """Finished VADA and source-only runs on the moons, to start from."""
    from dann.run.train import train

    root = tmp_path_factory.mktemp("starts")
    for m in ("vada", "source_only"):
        train(make_cfg(root / m, f"method={m}", *SHORT))
    return root


def test_dirt_t_starts_from_the_vada_run_and_records_where_it_started(start_runs, tmp_path):
    from dann.run.build import build_method

    vada = start_runs / "vada"
    cfg = make_cfg(tmp_path / "d", "method=dirt_t", f"method.start={vada}", *SHORT)
    validate(cfg)
    model = build_method(cfg, (2,), 2)
    state = torch.load(vada / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    for k, v in model.features.state_dict().items():
        assert torch.equal(v, state[f"features.{k}"])
    for k, v in model.classifier.state_dict().items():
        assert torch.equal(v, state[f"classifier.{k}"])
    vrec = json.loads((vada / "results.json").read_text())
    assert model.record_extras()["start"] == {
        "folder": str(vada.resolve()), "step": 20, "method": "vada", "pair": "moons", "seed": 0,
        "git_commit": vrec["git_commit"], "test/src_acc": vrec["metrics"]["test/src_acc"],
        "test/tgt_acc": vrec["metrics"]["test/tgt_acc"]}
    # a finished run's own record rebuilds it without reading the start folder (evaluation, t-SNE)
    gone = make_cfg(tmp_path / "d", "method=dirt_t", f"method.start={tmp_path / 'nowhere'}", *SHORT)
    assert build_method(gone, (2,), 2, start=False).start_info is None


def test_dirt_t_trains_on_the_target_only_from_the_start_run(start_runs, tmp_path):
    from dann.run.train import train

    log: list[tuple[int, str]] = []
    with watched_losses(method_class({"name": "dirt_t"}), log):
        rec = train(make_cfg(tmp_path / "d", "method=dirt_t", f"method.start={start_runs / 'vada'}", *SHORT))
    assert rec["status"] == "finished" and rec["start"]["method"] == "vada" and rec["start"]["step"] == 20
    assert {k for _, k in log} == {"tgt_x"}
    on_disk = json.loads((tmp_path / "d" / "results.json").read_text())
    assert on_disk["start"]["folder"] == str((start_runs / "vada").resolve())


def copy_run(src: Path, dst: Path, edit=None) -> Path:
    shutil.copytree(src, dst)
    if edit:
        rec = json.loads((dst / "results.json").read_text())
        edit(rec)
        (dst / "results.json").write_text(json.dumps(rec))
    return dst


def set_key(rec, key, value):
    node = rec["config"]
    *path, last = key.split(".")
    for p in path:
        node = node[p]
    node[last] = value


BAD_STARTS = [
    ("missing folder", "dirt_t", lambda root, tmp: tmp / "nowhere", r"no such folder"),
    ("no record", "dirt_t", lambda root, tmp: (tmp / "empty").mkdir() or tmp / "empty", r"results\.json cannot be read"),
    ("not finished", "dirt_t", lambda root, tmp: copy_run(root / "vada", tmp / "r", lambda r: r.update(status="interrupted")),
     r"did not finish"),
    ("another method", "dirt_t", lambda root, tmp: root / "source_only", r"that run is method 'source_only'"),
    ("another pair", "dirt_t",
     lambda root, tmp: copy_run(root / "vada", tmp / "r", lambda r: set_key(r, "pair.target", "moons")),
     r"pair\.target='moons' there, 'moons_rot35' here"),
    ("another network", "dirt_t",
     lambda root, tmp: copy_run(root / "vada", tmp / "r", lambda r: set_key(r, "model.hidden", 30)),
     r"model\.hidden=30 there, 15 here"),
    ("no checkpoint", "dirt_t",
     lambda root, tmp: copy_run(root / "vada", tmp / "r") and (tmp / "r" / "checkpoints" / "last.ckpt").unlink()
     or tmp / "r", r"no checkpoints/last\.ckpt there"),
    ("shot: another method", "shot", lambda root, tmp: root / "vada", r"that run is method 'vada'"),
    ("shot: another preprocessing", "shot",
     lambda root, tmp: copy_run(root / "source_only", tmp / "r", lambda r: set_key(r, "data.mean_of", "source")),
     r"data\.mean_of='source' there, 'pooled' here"),
]


@pytest.mark.parametrize("what, method, folder, message", BAD_STARTS, ids=[b[0] for b in BAD_STARTS])
def test_a_start_that_cannot_be_used_is_one_config_error_before_any_data_loads(start_runs, tmp_path, what, method,
                                                                                folder, message):
    from dann.data.datamodule import DomainPairDataModule
    from dann.run.train import train

    start = folder(start_runs, tmp_path)
    extra = ["method.source_fraction=0"] if method == "shot" else []
    cfg = make_cfg(tmp_path / "run", f"method={method}", f"method.start={start}", *extra, *SHORT)
    with mock.patch.object(DomainPairDataModule, "prepare", side_effect=AssertionError("data loaded")):
        with pytest.raises(ConfigError, match=message) as e:
            train(cfg)
    assert "\n" not in str(e.value) and "method.start=" in str(e.value)
    assert not (tmp_path / "run").exists()  # refused before the run folder was made


def test_dirt_t_without_a_start_is_refused_naming_the_option(tmp_path):
    with pytest.raises(ConfigError, match=r"method\.start is not set: dirt_t starts from a finished vada run"):
        validate(make_cfg(tmp_path, "method=dirt_t", *SHORT))


def test_shot_with_a_start_and_a_source_stage_is_refused(start_runs, tmp_path):
    with pytest.raises(ConfigError, match=r"set method\.source_fraction=0"):
        validate(make_cfg(tmp_path, "method=shot", f"method.start={start_runs / 'source_only'}", *SHORT))


def test_a_start_checkpoint_of_another_step_than_its_record_is_refused(start_runs, tmp_path):
    from dann.run.build import build_method

    start = copy_run(start_runs / "vada", tmp_path / "r", lambda r: r.update(steps=25))
    cfg = make_cfg(tmp_path / "d", "method=dirt_t", f"method.start={start}", *SHORT)
    validate(cfg)  # the record is fine; the checkpoint's step is read when the weights load
    with pytest.raises(ConfigError, match=r"from step 20, its record from step 25"):
        build_method(cfg, (2,), 2)


def test_shot_from_a_source_only_run_adapts_its_network_from_step_0(start_runs, tmp_path):
    from dann.run.train import train

    so = start_runs / "source_only"
    log: list[tuple[int, str]] = []
    with watched_losses(method_class({"name": "shot"}), log):
        rec = train(make_cfg(tmp_path / "s", "method=shot", f"method.start={so}", "method.source_fraction=0",
                             *SHORT))
    assert rec["status"] == "finished" and rec["source_steps"] == 0 and rec["start"]["method"] == "source_only"
    assert {k for _, k in log} == {"tgt_x"}
    start = torch.load(so / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    end = torch.load(tmp_path / "s" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(end[k], v) for k, v in start.items() if k.startswith("classifier."))
    assert any(not torch.equal(end[k], v) for k, v in start.items() if k.startswith("features."))


# -- BSP, AFN, BNM, JAN -------------------------------------------------------------------------------
def test_bsp_penalty_is_the_largest_squared_singular_values():
    from dann.methods.bsp import spectral_penalty

    g = torch.Generator().manual_seed(0)
    f = torch.randn(6, 4, generator=g, dtype=torch.float64)
    s = np.linalg.svd(f.numpy(), compute_uv=False)
    assert float(spectral_penalty(f, 1)) == pytest.approx(s[0] ** 2, rel=1e-12)
    assert float(spectral_penalty(f, 2)) == pytest.approx(s[0] ** 2 + s[1] ** 2, rel=1e-12)
    # its gradient: d sigma_1^2 / dF = 2 sigma_1 u_1 v_1^T
    f.requires_grad_(True)
    spectral_penalty(f, 1).backward()
    u, s, vt = np.linalg.svd(f.detach().numpy())
    np.testing.assert_allclose(f.grad.numpy(), 2 * s[0] * np.outer(u[:, 0], vt[0]), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name, base", [("dann_bsp", "dann"), ("cdan_bsp", "cdan")])
def test_bsp_adds_its_term_to_the_base_methods_terms(name, base):
    from dann.methods.bsp import spectral_penalty

    m, b0 = make(name, bsp_weight=0.01), make(base)
    b0.load_state_dict(m.state_dict())
    m.eval(), b0.eval()
    b = rand_batch()
    terms, want = m.losses(b), b0.losses(b)
    assert set(terms) == set(want) | {"bsp"}
    assert all(torch.equal(terms[k], want[k]) for k in want)
    with torch.no_grad():
        f = m.features(torch.cat([b["src_x"], b["tgt_x"]]))
    assert float(terms["bsp"]) == pytest.approx(0.01 * float(spectral_penalty(f[:8]) + spectral_penalty(f[8:])),
                                                rel=1e-6)


def test_afn_stepwise_norm_loss_and_its_gradient_do_not_depend_on_the_norms_scale():
    from dann.methods.afn import stepwise_norm_loss

    for scale in (1.0, 4e3):  # the MNIST net's features reach norms of thousands
        f = (scale * torch.randn(5, 7, dtype=torch.float64)).requires_grad_(True)
        loss = stepwise_norm_loss(f, 1.0)
        assert float(loss) == pytest.approx(1.0, rel=1e-12)  # (||f|| - (||f|| + dr))^2 = dr^2
        loss.backward()
        want = -2 * 1.0 * f.detach() / f.detach().norm(dim=1, keepdim=True) / 5
        assert torch.allclose(f.grad, want, rtol=1e-10)


def test_afn_terms_sum_the_two_domains_means():
    from dann.methods.afn import stepwise_norm_loss

    m = make("afn", trade_off=0.1, dr=0.5)
    b = rand_batch()
    terms = m.losses(b)
    assert set(terms) == {"cls", "norm"}
    assert float(terms["norm"]) == pytest.approx(0.1 * 2 * 0.25, rel=1e-6)
    assert set(make("afn", entropy_weight=0.1).losses(b)) == {"cls", "norm", "ent"}
    f = m.features(torch.cat([b["src_x"], b["tgt_x"]]))
    assert float(stepwise_norm_loss(f[:8], 0.5)) == pytest.approx(0.25)


def test_bnm_is_the_mean_singular_value_of_the_target_predictions():
    from dann.methods.bnm import batch_nuclear_norm

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=g, dtype=torch.float64)
    p = np.exp(logits.numpy())
    p /= p.sum(1, keepdims=True)
    s = np.linalg.svd(p, compute_uv=False)
    assert float(batch_nuclear_norm(logits)) == pytest.approx(s.sum() / min(6, 4), rel=1e-12)
    # one-hot predictions of 4 distinct classes: the nuclear norm is as large as it gets here
    assert float(batch_nuclear_norm(torch.eye(4, dtype=torch.float64) * 50)) > float(batch_nuclear_norm(logits))
    m = make("bnm")
    b = rand_batch()
    terms = m.losses(b)
    with torch.no_grad():
        lt = m(b["tgt_x"])
    assert float(terms["bnm"]) == pytest.approx(-float(batch_nuclear_norm(lt)), rel=1e-6)


def test_jmmd_is_the_mmd_of_the_product_kernel():
    from dann.methods.dan import bandwidth, mk_mmd
    from dann.methods.jan import jmmd

    g = torch.Generator().manual_seed(0)
    fs, ft = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)
    ps, pt = torch.rand(4, 2, generator=g, dtype=torch.float64), torch.rand(4, 2, generator=g, dtype=torch.float64)
    s2 = float(bandwidth(torch.cat([fs, ft])))
    cs = [0.5, 2.0]

    def k(a, b, c, bw):
        return math.exp(-sum((x - y) ** 2 for x, y in zip(a, b)) / (c * bw))

    def kj(i, a, j, b):  # the joint kernel: DAN's multi-kernel on f times one Gaussian on p
        (fa, pa), (fb, pb) = a, b
        return sum(k(fa[i], fb[j], c, s2) for c in cs) / len(cs) * k(pa[i], pb[j], 1.0, 0.5)

    S, T = (fs.tolist(), ps.tolist()), (ft.tolist(), pt.tolist())
    n = 4
    quad = (sum(kj(i, S, j, S) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
            + sum(kj(i, T, j, T) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
            - 2 * sum(kj(i, S, j, T) for i in range(n) for j in range(n)) / n ** 2)
    args = ([fs, ps], [ft, pt], [torch.tensor(s2, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64)],
            [cs, [1.0]])
    assert float(jmmd(*args, "quadratic")) == pytest.approx(quad, rel=1e-10)
    lin = sum(kj(i, S, i + 1, S) + kj(i, T, i + 1, T) - kj(i, S, i + 1, T) - kj(i + 1, S, i, T) for i in (0, 2)) * 2 / n
    assert float(jmmd(*args, "linear")) == pytest.approx(lin, rel=1e-10)
    # one layer: DAN's MK-MMD exactly
    for est in ("linear", "quadratic"):
        assert torch.equal(jmmd([fs], [ft], [bandwidth(torch.cat([fs, ft]))], [cs], est), mk_mmd(fs, ft, cs, est))


def test_jan_reaches_the_features_and_the_label_predictor():
    m = make("jan", estimator="quadratic")
    terms = m.losses(rand_batch())
    assert set(terms) == {"cls", "jmmd"}
    m.zero_grad()
    terms["jmmd"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.features.parameters())
    assert all(p.grad is not None for p in m.classifier.parameters())  # through the probabilities


# -- the table: a start folder is a run's own, like its output folder -------------------------------
def test_dirt_t_seeds_with_their_own_start_runs_share_one_table_row(start_runs, tmp_path, capsys):
    from dann.report.cli import main as table
    from dann.run.train import train

    rec = train(make_cfg(tmp_path / "s0", "method=dirt_t", f"method.start={start_runs / 'vada'}", *SHORT))
    other = dict(rec, seed=1, config={**rec["config"], "seed": 1,
                                      "method": {**rec["config"]["method"], "start": str(tmp_path / "vada_s1")}})
    (tmp_path / "s1").mkdir()
    (tmp_path / "s1" / "results.json").write_text(json.dumps(other))
    assert table([str(tmp_path / "s0"), str(tmp_path / "s1")]) == 0
    rows = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| dirt_t")]
    assert len(rows) == 1 and "(2)" in rows[0], rows


def test_singular_values_of_a_non_finite_matrix_are_nan_for_the_guard_to_name():
    """LAPACK raises on NaN input; the loss must become NaN instead, so that the finite-loss guard
    stops the run naming the step and the term (tests/test_methods_da.py's NaN test, for BSP, BNM)."""
    from dann.methods.bsp import singular_values

    m = torch.tensor([[3.0, 1.0], [2.0, 4.0]], requires_grad=True)
    s = singular_values(m)
    assert torch.equal(s, torch.linalg.svdvals(m))
    s.sum().backward()
    m2 = m.detach().clone().requires_grad_(True)
    torch.linalg.svdvals(m2).sum().backward()
    assert torch.equal(m.grad, m2.grad)
    for bad in (float("nan"), float("inf"), -float("inf")):
        assert torch.isnan(singular_values(torch.tensor([[bad, 1.0], [2.0, 3.0]]))).all()
