"""Where self-ensembling's unsupervised terms act: the teacher's confident share of the target.

Self-ensembling's consistency and class-balance terms are weighted by the mask of target images
whose teacher prediction (on an augmented view) is above the confidence threshold; elsewhere the
method is source-only training on augmented images. For each finished self-ensembling run given,
this prints, on the target's test split:

- the teacher's and the student's accuracy (the teacher is the model of record);
- the share of images the teacher is confident on (one augmented view each, the method's own
  augmentation and threshold), and the teacher's accuracy on that share and on the rest;
- how the confident predictions spread over the classes against the true labels' spread;
- from the run's ``metrics.csv`` (``logger=csv``), the training batches' confident share
  (``train/confident``) averaged over each 1,000 steps.

It reads target labels: a diagnosis of a finished run (an oracle's view), not a selection rule.

    PYTHONPATH=. DANN_DATA_DIR=<root> python experiments/methods/self_ensembling_confidence.py RUN_DIR...
"""

from __future__ import annotations

import csv
import sys
from collections import defaultdict
from pathlib import Path

import torch

from dann.run.build import load_run


@torch.no_grad()
def confidence_table(run_dir: Path) -> None:
    rec, dm, model = load_run(run_dir)
    if rec.get("method") != "self_ensembling":
        raise SystemExit(f"{run_dir} is a {rec.get('method')} run, not self_ensembling")
    h = model.hparams
    torch.manual_seed(0)  # the augmentation's draws: the same views on every call
    teacher, student = model.teacher(), model.student
    teacher.eval(), student.eval()
    t_pred, s_pred, conf = [], [], []
    split = dm.tgt_test
    for x in split.batches(None, 1000):
        conf.append(torch.softmax(teacher(model.aug(x)), 1).max(1).values > h.confidence)
        t_pred.append(teacher(x).argmax(1))
        s_pred.append(student(x).argmax(1))
    y, t, s, m = split.y, torch.cat(t_pred), torch.cat(s_pred), torch.cat(conf)
    k = int(y.max()) + 1
    print(f"{run_dir} (seed {rec.get('seed')}, step {rec.get('steps')}), target test, {len(y):,} images")
    print(f"  accuracy: teacher {(t == y).float().mean():.4f} (record: {rec['selected']['tgt_acc']:.4f}), "
          f"student {(s == y).float().mean():.4f}")
    print(f"  teacher confident (> {h.confidence:.4f} on one augmented view): {m.float().mean():.4f} of the images; "
          f"accuracy there {(t[m] == y[m]).float().mean():.4f}, elsewhere {(t[~m] == y[~m]).float().mean():.4f}")
    pred_share = torch.bincount(t[m], minlength=k).float() / max(int(m.sum()), 1)
    true_share = torch.bincount(y, minlength=k).float() / len(y)
    print("  class:            " + " ".join(f"{c:5d}" for c in range(k)))
    print("  confident preds:  " + " ".join(f"{v:5.3f}" for v in pred_share.tolist()))
    print("  true labels:      " + " ".join(f"{v:5.3f}" for v in true_share.tolist()))
    metrics = run_dir / "metrics.csv"
    if metrics.exists():
        sums: dict[int, list[float]] = defaultdict(list)
        with metrics.open() as f:
            for row in csv.DictReader(f):
                if row.get("train/confident"):
                    sums[int(row["step"]) // 1000].append(float(row["train/confident"]))
        print("  train/confident by 1,000 steps: "
              + ", ".join(f"{b}k {sum(v) / len(v):.3f}" for b, v in sorted(sums.items())))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    for d in sys.argv[1:]:
        confidence_table(Path(d))
