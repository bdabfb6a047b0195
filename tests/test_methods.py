"""One training step of every method on a tiny batch; DANN's gradient flow through the GRL."""

import math

import pytest
import torch

from dann.config import method_class, method_names
from dann.models import build_nets

SHAPE, K = (3, 32, 32), 10


def tiny_batch(n=8):
    g = torch.Generator().manual_seed(0)
    return {"src_x": torch.randn(n, *SHAPE, generator=g), "src_y": torch.randint(0, K, (n,), generator=g),
            "tgt_x": torch.randn(n, *SHAPE, generator=g) + 1, "tgt_y": torch.randint(0, K, (n,), generator=g)}


def make(name, max_steps=100):
    return method_class({"name": name})(build_nets("mnist", SHAPE, K), num_classes=K, max_steps=max_steps)


# Methods with several updates per batch (manual optimization) step inside `losses`, which needs a
# Trainer: tests/test_methods_da.py runs them through one.
AUTOMATIC = [n for n in method_names() if method_class({"name": n}).automatic_optimization is not False]


@pytest.mark.parametrize("name", AUTOMATIC)
def test_one_step_finite_loss(name):
    m = make(name)
    terms = m.losses(tiny_batch())
    loss = sum(terms.values())
    assert torch.isfinite(loss)
    loss.backward()
    # every trained parameter gets a gradient (for self-ensembling: the student's; `features`
    # holds the teacher, the evaluated copy, which follows by a moving average instead)
    trained = [p for group in m.optimized_parameters() for p in group]
    assert trained and all(p.grad is not None for p in trained)
    assert set(map(id, m.student.parameters() if hasattr(m, "student") else m.features.parameters())) <= set(map(id, trained))


def test_target_only_uses_target_labels_and_source_only_does_not():
    b = tiny_batch()
    so, to = make("source_only"), make("target_only")
    to.load_state_dict(so.state_dict())
    l_so = so.losses(b)["cls"]
    b2 = dict(b, tgt_y=(b["tgt_y"] + 1) % K)
    assert so.losses(b2)["cls"] == l_so  # source-only never reads target labels
    assert to.losses(b2)["cls"] != to.losses(b)["cls"]


def test_dann_does_not_read_target_labels():
    m = make("dann")
    b = tiny_batch()
    torch.manual_seed(1)
    a = m.losses(b)
    torch.manual_seed(1)
    c = m.losses(dict(b, tgt_y=(b["tgt_y"] + 3) % K))
    assert all(torch.equal(a[k], c[k]) for k in a)




def test_dann_domain_gradient_flips_at_features(monkeypatch):
    """The domain loss reaches the discriminator unchanged and the features reversed (x lambda)."""
    torch.manual_seed(0)
    m = make("dann")
    m.eval()  # no dropout: the two passes must be identical
    b = tiny_batch()
    monkeypatch.setattr(type(m), "lambda_p", property(lambda self: 0.5))
    m.zero_grad()
    m.losses(b)["dom"].backward()
    g_rev = [p.grad.clone() for p in m.features.parameters()]
    g_disc = [p.grad.clone() for p in m.discriminator.parameters()]
    assert all(g.abs().sum() > 0 for g in g_disc)

    # The same domain loss without the GRL: plain gradients.
    m.zero_grad()
    f = m.features(torch.cat([b["src_x"], b["tgt_x"]]))
    d = m.discriminator(f).squeeze(1)
    y = torch.cat([torch.zeros(len(b["src_x"])), torch.ones(len(b["tgt_x"]))])
    torch.nn.functional.binary_cross_entropy_with_logits(d, y).backward()
    g_plain = [p.grad.clone() for p in m.features.parameters()]
    g_disc_plain = [p.grad.clone() for p in m.discriminator.parameters()]
    for a, c in zip(g_rev, g_plain):
        assert torch.allclose(a, -0.5 * c, atol=1e-6, rtol=1e-4)
    for a, c in zip(g_disc, g_disc_plain):  # the discriminator learns at full strength
        assert torch.allclose(a, c, atol=1e-6, rtol=1e-4)


def test_only_dann_has_a_discriminator():
    assert make("dann").discriminator is not None
    assert make("source_only").discriminator is None


def test_the_host_and_device_watches_name_the_same_first_nonfinite_step(monkeypatch):
    """On CPU the first non-finite loss is read on the host each step; on a GPU it is kept on the
    device without a sync. Fed the same steps (a NaN term at step 2, an inf at step 4), both name
    step 2 with its terms, and neither names a step before it."""
    nan, inf = float("nan"), float("inf")
    steps = [(0, 1.0, 2.0), (1, 0.5, 0.25), (2, nan, 0.5), (3, 1.0, 1.0), (4, inf, 1.0)]
    found = []
    for watch in ("_watch_finite", "_watch_finite_on_device"):
        m = make("dann")
        for step, cls, dom in steps:
            monkeypatch.setattr(type(m), "global_step", property(lambda self, s=step: s))
            terms = {"cls": torch.tensor(cls), "dom": torch.tensor(dom)}
            getattr(m, watch)(torch.stack(list(terms.values())).sum(), terms)
            if step == 1:
                assert m.first_nonfinite() is None
        found.append(m.first_nonfinite())
    host, device = found
    assert host[0] == device[0] == 2
    assert host[1]["dom"] == device[1]["dom"] == 0.5
    assert all(math.isnan(d["loss"]) and math.isnan(d["cls"]) for _, d in found)
