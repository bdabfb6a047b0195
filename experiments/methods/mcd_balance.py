"""How strongly MCD's step B (classifiers maximise their target discrepancy) and step C (the
feature extractor minimises it, ``num_k`` times) pull against each other in a finished run.

From the run's last checkpoint, with its own optimizers and their saved state (momentum, Adam's
moments) at the learning rate they had reached, on one seeded batch of 64 source + 64 target
training images: the discrepancy before and after one step-B update, and before and after the
``num_k`` step-C updates; the gradient norms behind them. Label-free, but for the line marked
"diagnosis only", which reads 2,000 target *test* labels to say which classifier the discrepancy
hurt (never used to choose anything).

    PYTHONPATH=. DANN_DATA_DIR=<root> python experiments/methods/mcd_balance.py RUN_DIR [RUN_DIR...]
"""

from __future__ import annotations

import os
import sys

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from dann.methods.mcd import discrepancy
from dann.run.build import build_datamodule, build_method


def load(run: str, dm):
    cfg = OmegaConf.load(f"{run}/.hydra/config.yaml")
    m = build_method(cfg, dm.input_shape, dm.num_classes)
    ck = torch.load(f"{run}/checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    m.load_state_dict(ck["state_dict"])
    opts, _ = m.configure_optimizers()
    for o, state in zip(opts, ck["optimizer_states"]):
        o.load_state_dict(state)  # its saved param_groups carry the learning rate the run had reached
    return m, opts, ck["global_step"]


def grad_norm(loss, params) -> float:
    return torch.sqrt(sum((g ** 2).sum() for g in torch.autograd.grad(loss, params, retain_graph=True))).item()


def main(run: str) -> None:
    cfg = OmegaConf.load(f"{run}/.hydra/config.yaml")
    cfg.data.root = os.environ.get("DANN_DATA_DIR", cfg.data.root)
    dm = build_datamodule(cfg)
    dm.setup("fit")
    g = torch.Generator().manual_seed(0)
    it = torch.randperm(len(dm.tgt_train.y), generator=g)[:64]
    si = torch.randperm(len(dm.src_train.y), generator=g)[:64]
    xt, xs, ys = dm.tgt_train.inputs(it), dm.src_train.inputs(si), dm.src_train.y[si]
    disc = lambda m, f: discrepancy(m.classifier(f), m.classifier2(f))  # noqa: E731

    m, opts, step = load(run, dm)
    h = m.hparams
    print(f"{run}: step {step}, optimizer {h.optimizer}, lr G {opts[0].param_groups[0]['lr']:.2e}, "
          f"lr F {opts[1].param_groups[0]['lr']:.2e}, num_k {h.num_k}")
    d = disc(m, m.features(xt))
    ce = F.cross_entropy(m.classifier(m.features(xs)), ys)
    cls = [*m.classifier.parameters(), *m.classifier2.parameters()]
    print(f"  discrepancy {d.item():.4f}; |grad_G d| {grad_norm(d, list(m.features.parameters())):.4f}, "
          f"|grad_G CE_src| {grad_norm(ce, list(m.features.parameters())):.4f}, |grad_F1F2 d| {grad_norm(d, cls):.4f}")
    with torch.no_grad():
        ft = m.features(xt)
        p1, p2 = m.classifier(ft).softmax(1), m.classifier2(ft).softmax(1)
    print(f"  target batch: F1 and F2 agree on {(p1.argmax(1) == p2.argmax(1)).float().mean().item():.2f}, "
          f"mean max-prob F1 {p1.max(1).values.mean().item():.3f}, F2 {p2.max(1).values.mean().item():.3f}")
    idx = dm.tgt_test.sample(2000, 0)
    with torch.no_grad():
        f = m.features(dm.tgt_test.inputs(idx))
        q1, q2 = m.classifier(f).softmax(1), m.classifier2(f).softmax(1)
    y = dm.tgt_test.y[idx]
    accs = [(q.argmax(1) == y).float().mean().item() for q in (q1, q2, q1 + q2)]
    print("  diagnosis only (2,000 target test labels): accuracy F1 (scored) %.4f, F2 %.4f, F1+F2 %.4f" % tuple(accs))

    # one step-B update, with the run's classifier optimizer (same computation as MCD.losses)
    m, opts, _ = load(run, dm)
    with torch.no_grad():
        f = m.features(torch.cat([xs, xt]))
    before = disc(m, f[64:])
    loss = F.cross_entropy(m.classifier(f[:64]), ys) + F.cross_entropy(m.classifier2(f[:64]), ys) - before
    opts[1].zero_grad()
    loss.backward()
    opts[1].step()
    with torch.no_grad():
        after = disc(m, f[64:])
    print(f"  step B (1 update of F1, F2): {before.item():.6f} -> {after.item():.6f} "
          f"({after.item() - before.item():+.6f})")

    # num_k step-C updates, with the run's feature-extractor optimizer
    m, opts, _ = load(run, dm)
    seq = []
    for _ in range(h.num_k):
        d = disc(m, m.features(xt))
        seq.append(d.item())
        opts[0].zero_grad()
        d.backward()
        opts[0].step()
    with torch.no_grad():
        seq.append(disc(m, m.features(xt)).item())
    print(f"  step C ({h.num_k} updates of G):    {seq[0]:.6f} -> {seq[-1]:.6f} ({seq[-1] - seq[0]:+.6f})")


if __name__ == "__main__":
    torch.set_num_threads(1)
    for r in sys.argv[1:]:
        main(r)
