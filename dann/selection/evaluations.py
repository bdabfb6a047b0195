"""``evaluations.jsonl``: one line per evaluation of a run (step, accuracies, validator scores)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

EVALS_FILE = "evaluations.jsonl"
#: the probe's target predictions, one file per evaluation: ``predictions/step=NNNNNN.npy``
PREDICTIONS_DIR = "predictions"
#: the key of EnsV's score: computed from the saved predictions over a set of checkpoints
ENSV = "ensv"


def _line(row: dict[str, Any]) -> str:
    """One evaluation as a line of JSON (NaN written as null)."""
    return json.dumps({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()})


def append_evaluation(run_dir: str | Path, row: dict[str, Any]) -> None:
    """Append one evaluation to the run's file."""
    with open(Path(run_dir) / EVALS_FILE, "a") as f:
        f.write(_line(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_evaluations(run_dir: str | Path) -> list[dict[str, Any]]:
    """The run's evaluations by step; a step written twice (a resumed run) keeps its last line,
    and a truncated last line (a run killed mid-write) is ignored."""
    path = Path(run_dir) / EVALS_FILE
    if not path.exists():
        return []
    by_step: dict[int, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        row = {k: (math.nan if v is None else v) for k, v in row.items()}
        by_step[int(row["step"])] = row
    return [by_step[s] for s in sorted(by_step)]


def record_evaluations(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The evaluations of the run a results record was read from (its ``_path``), with EnsV's
    score over the run's own checkpoints; none without a path."""
    path = record.get("_path")
    return with_ensv(Path(path).parent, read_evaluations(Path(path).parent)) if path else []


def with_ensv(run_dir: str | Path, evals: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``evals`` with ``ensv``: each evaluation's agreement with the mean prediction of the run's
    checkpoints (NaN where the probe saved no predictions)."""
    from dann.selection.scores import ensv_scores

    preds = read_predictions(run_dir)
    have = [e for e in evals if int(e["step"]) in preds]
    shapes = {preds[int(e["step"])].shape for e in have}
    scores = dict(zip((int(e["step"]) for e in have), ensv_scores([preds[int(e["step"])] for e in have]))) \
        if have and len(shapes) == 1 else {}
    return [{**e, ENSV: scores.get(int(e["step"]), math.nan)} for e in evals]




def save_predictions(run_dir: str | Path, step: int, probs) -> Path:
    """The target sample's softmax predictions at ``step`` (float16, N x K), written whole or not at all."""
    import numpy as np

    d = Path(run_dir) / PREDICTIONS_DIR
    d.mkdir(exist_ok=True)
    path = d / f"step={int(step):06d}.npy"
    tmp = d / f".{path.name}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        np.save(f, np.asarray(probs, dtype=np.float16))
    os.replace(tmp, path)
    return path


def read_predictions(run_dir: str | Path) -> dict[int, "np.ndarray"]:
    """``{step: N x K predictions}`` the probe saved (empty for runs made before it saved them)."""
    import numpy as np

    out = {}
    for p in sorted((Path(run_dir) / PREDICTIONS_DIR).glob("step=*.npy")):
        try:
            out[int(p.stem.split("=", 1)[1])] = np.load(p, allow_pickle=False)
        except (ValueError, OSError):
            continue  # a stray or damaged file: that evaluation has no predictions
    return out
