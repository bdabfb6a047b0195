"""Which of MCD's three steps moves the classifiers' discrepancy on the target domain, at the end
of a finished run (Saito et al. 2018; dann/methods/mcd.py):

* A: G, F1, F2 on the labelled source;
* B: F1, F2 maximise their target discrepancy d, keeping the source;
* C: G minimises d, ``num_k`` times.

From the run's last checkpoint (or the checkpoint file given), with its own optimizers and their saved state (momentum, Adam's
moments) at the learning rate they had reached, BATCHES more batches of MCD are trained exactly as
:meth:`MCD.losses` does; after each step, d is measured on 2,000 held-out target *test* images
(d needs no label). The change each step makes is summed over the batches: positive means the step
drove the classifiers apart on the target distribution, not only on its own batch. Then G alone
(step C without A and B) for LONG updates: can it bring the classifiers into agreement?

Label-free but for the lines marked "diagnosis only", which read the same 2,000 images' labels to
say which classifier the discrepancy hurt (never used to choose anything).

    PYTHONPATH=. DANN_DATA_DIR=<root> python experiments/methods/mcd_balance.py RUN_DIR|CKPT [...]

(CKPT: ``RUN_DIR/checkpoints/*.ckpt``, e.g. ``step=001000.ckpt`` of a run with ``checkpoint.keep_all=true``.)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from dann.run.build import build_datamodule, build_method

BATCH = 64  # per domain, as in training
BATCHES = 50  # full A-B-C batches from the checkpoint
LONG = 500  # updates of G alone
N_EVAL = 2000


def where(path: str) -> tuple[Path, Path]:
    """(run folder, checkpoint) for a run folder (its last checkpoint) or a checkpoint file."""
    p = Path(path)
    return (p.parent.parent, p) if p.suffix == ".ckpt" else (p, p / "checkpoints" / "last.ckpt")


def load(cfg, ckpt: Path, dm):
    """The run's model and optimizers (G, then F1 + F2) as the checkpoint left them."""
    m = build_method(cfg, dm.input_shape, dm.num_classes)
    ck = torch.load(ckpt, map_location="cpu", weights_only=False)
    m.load_state_dict(ck["state_dict"])
    opts, _ = m.configure_optimizers()
    for o, state in zip(opts, ck["optimizer_states"]):
        o.load_state_dict(state)  # its saved param_groups carry the learning rate the run had reached
    return m, opts, ck["global_step"]


def step(opt, loss) -> None:
    opt.zero_grad()
    loss.backward()
    opt.step()


class Probe:
    """d, agreement and (diagnosis only) accuracies on fixed held-out target test images, and the
    source validation accuracy of F1."""

    def __init__(self, dm):
        self.xt, self.yt = self._take(dm.tgt_test)
        self.xs, self.ys = self._take(dm.src_val if len(dm.src_val.y) else dm.src_test)

    @staticmethod
    def _take(split):
        idx = split.sample(N_EVAL, 0)
        return split.inputs(idx), split.y[idx]

    @torch.no_grad()
    def d(self, m) -> float:
        return m.target_discrepancy(m.features(self.xt)).item()

    @torch.no_grad()
    def describe(self, m) -> str:
        f = m.features(self.xt)
        q1, q2 = m.classifier(f).softmax(1), m.classifier2(f).softmax(1)
        src = (m.classifier(m.features(self.xs)).argmax(1) == self.ys).float().mean().item()
        acc = [(q.argmax(1) == self.yt).float().mean().item() for q in (q1, q2, q1 + q2)]
        return (f"d {m.target_discrepancy(f).item():.4f}, F1/F2 agree on "
                f"{(q1.argmax(1) == q2.argmax(1)).float().mean().item():.2f}, mean max-prob F1 "
                f"{q1.max(1).values.mean().item():.3f} F2 {q2.max(1).values.mean().item():.3f}, source val acc "
                f"{src:.4f}; diagnosis only: target acc F1 (scored) {acc[0]:.4f}, F2 {acc[1]:.4f}, F1+F2 {acc[2]:.4f}")


def main(run: str) -> None:
    run_dir, ckpt = where(run)
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    cfg.data.root = os.environ.get("DANN_DATA_DIR", cfg.data.root)
    dm = build_datamodule(cfg)
    dm.setup("fit")
    probe = Probe(dm)
    g = torch.Generator().manual_seed(0)
    m, (opt_g, opt_f), at = load(cfg, ckpt, dm)
    h = m.hparams
    print(f"{run}: step {at}, optimizer {h.optimizer}, lr G {opt_g.param_groups[0]['lr']:.2e}, "
          f"lr F {opt_f.param_groups[0]['lr']:.2e}, num_k {h.num_k}")
    print(f"  at the checkpoint: {probe.describe(m)}")

    moved = {"A": 0.0, "B": 0.0, "C": 0.0}

    def measure(name: str, before: float) -> float:
        after = probe.d(m)
        moved[name] += after - before
        return after

    d = probe.d(m)
    for _ in range(BATCHES):
        si = torch.randint(len(dm.src_train.y), (BATCH,), generator=g)
        ti = torch.randint(len(dm.tgt_train.y), (BATCH,), generator=g)
        xs, ys, xt = dm.src_train.inputs(si), dm.src_train.y[si], dm.tgt_train.inputs(ti)
        # A: G, F1 and F2 on the labelled source
        opt_f.zero_grad()
        step(opt_g, m.source_loss(m.features(xs), ys))
        opt_f.step()
        d = measure("A", d)
        # B: F1, F2 maximise d on the target, keeping the source (G's features fixed)
        with torch.no_grad():
            f = m.features(torch.cat([xs, xt]))
        step(opt_f, m.source_loss(f[:BATCH], ys) - m.target_discrepancy(f[BATCH:]))
        d = measure("B", d)
        # C: G minimises d, num_k times
        for _ in range(h.num_k):
            step(opt_g, m.target_discrepancy(m.features(xt)))
        d = measure("C", d)
    print(f"  {BATCHES} more batches (A, B, C as in training): d on held-out target images moved by "
          + ", ".join(f"{k} {v:+.4f}" for k, v in moved.items()) + f" (sum {sum(moved.values()):+.4f})")
    print(f"    after them: {probe.describe(m)}")

    m, (opt_g, _), _ = load(cfg, ckpt, dm)
    for _ in range(LONG):
        ti = torch.randint(len(dm.tgt_train.y), (BATCH,), generator=g)
        step(opt_g, m.target_discrepancy(m.features(dm.tgt_train.inputs(ti))))
    print(f"  G alone minimising d ({LONG} updates, its own optimizer): {probe.describe(m)}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    for r in sys.argv[1:]:
        main(r)
