"""``evaluations.jsonl``: one line per evaluation of a run (step, accuracies, validator scores)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

EVALS_FILE = "evaluations.jsonl"


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
    """The evaluations of the run a results record was read from (its ``_path``); none without one."""
    path = record.get("_path")
    return read_evaluations(Path(path).parent) if path else []


