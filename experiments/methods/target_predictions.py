"""How a finished run's predictions spread over the target's classes.

For each run folder given (its final weights, ``load_run``), on the target's test split: the
accuracy, the mean entropy of the predictions, the entropy of their mean (ln 10 = 2.30 when the
ten classes are predicted equally often; ln 2 = 0.69 for two), the share of the images each class
is predicted for against the true labels' share, and the classes' recall. A run whose target
predictions are confident (low mean entropy) and piled onto a few classes (low entropy of the
mean) has collapsed on the target even where its source accuracy is intact.

It reads target labels: a diagnosis of finished runs (an oracle's view), not a selection rule.

    PYTHONPATH=. DANN_DATA_DIR=<root> python experiments/methods/target_predictions.py RUN_DIR...
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from dann.run.build import load_run
from dann.selection.scores import entropy_score


@torch.no_grad()
def spread(run_dir: Path) -> None:
    rec, dm, model = load_run(run_dir)
    split = dm.tgt_test
    probs = torch.cat([torch.softmax(model(x), 1) for x in split.batches(None, 1000)])
    y, pred, k = split.y, probs.argmax(1), probs.shape[1]
    ent, ent_mean = entropy_score(probs), entropy_score(probs.mean(0, keepdim=True))
    recall = [(pred[y == c] == c).float().mean().item() for c in range(k)]
    print(f"{run_dir}: {rec.get('method')} seed {rec.get('seed')}, step {rec.get('steps')}; target test "
          f"({len(y):,} images) accuracy {(pred == y).float().mean():.4f}, source test "
          f"{rec['metrics'].get('test/src_acc', float('nan')):.4f}")
    print(f"  mean entropy {ent:.3f}, entropy of the mean {ent_mean:.3f} (ln {k} = {torch.log(torch.tensor(k)):.2f})")
    print("  class:        " + " ".join(f"{c:5d}" for c in range(k)))
    print("  predicted:    " + " ".join(f"{v:5.3f}" for v in (torch.bincount(pred, minlength=k) / len(y)).tolist()))
    print("  true:         " + " ".join(f"{v:5.3f}" for v in (torch.bincount(y, minlength=k) / len(y)).tolist()))
    print("  recall:       " + " ".join(f"{v:5.3f}" for v in recall))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    for d in sys.argv[1:]:
        spread(Path(d))
