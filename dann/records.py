"""The per-run results record (``results.json``) and helpers to read many of them."""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path
from typing import Any

RESULTS_FILE = "results.json"
REQUIRED_KEYS = ("pair", "method", "seed", "status", "config", "git_commit", "steps", "metrics", "wall_time_s")
#: what the readers of a record (table, summaries, selection) count on: key -> (allowed types, as said)
KEY_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "pair": ((str,), "a string"), "method": ((str,), "a string"), "status": ((str,), "a string"),
    "seed": ((int,), "an integer"), "steps": ((int,), "an integer"), "metrics": ((dict,), "an object"),
    "config": ((dict, type(None)), "an object or null"), "git_commit": ((str, type(None)), "a string or null"),
    "wall_time_s": ((int, float, type(None)), "a number or null"),
}
#: written by a running dann-train (removed when it ends): with no results.json, a killed run
OWNER_FILE = ".run.owner"
#: what only a run folder holds: a folder with one of these and no results.json is a run without a record
RUN_MARKERS = ("checkpoints", "metrics.csv", "evaluations.jsonl", OWNER_FILE)


def git_commit() -> str | None:
    """Commit of the code that ran (``+dirty`` if the work tree had changes), or None."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=5).stdout.strip()
        if not sha:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it: ``path`` holds the old
    text or the new, never part of it. An OSError names ``path`` (a write on a full disk does not)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as e:
        raise OSError(e.errno, f"{e.strerror}: cannot write {path}") from None
    finally:
        tmp.unlink(missing_ok=True)


def write_record(run_dir: Path, record: dict[str, Any]) -> Path:
    """Write ``record`` atomically as ``run_dir/results.json``."""
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise ValueError(f"results record lacks keys {missing}")
    path = Path(run_dir) / RESULTS_FILE
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    return path


#: optional keys the readers use, with what they must hold when present
OPTIONAL_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "selection": ((str, type(None)), "a string or null"), "error": ((str, type(None)), "a string or null"),
    "device": ((str, type(None)), "a string or null"), "source_at_chance": ((bool,), "true or false"),
    "selected": ((dict, type(None)), "an object or null"),
}
#: optional step counts: null or an integer >= 0
OPTIONAL_STEPS = ("collapsed_at_step", "diverged_at_step")


def shown_value(v: Any) -> str:
    return json.dumps(v)[:60] if not isinstance(v, float) else repr(v)


def is_accuracy(key: str) -> bool:
    """``test/tgt_acc``, ``tgt_acc``, ``chance_acc``: a share of correct predictions, in [0, 1]."""
    return key.rsplit("/", 1)[-1].endswith("acc")


def number_problem(key: str, v: Any) -> str | None:
    """What is wrong with ``v`` as the value of number ``key``: not a number, infinite, or an
    accuracy outside [0, 1]. Null and NaN are "not computed" (the writers write NaN as such)."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return f"{key} is {shown_value(v)}, expected a number or null"
    if math.isnan(v):
        return None
    if math.isinf(v):
        return f"{key} is {v}, expected a finite number"
    if is_accuracy(key) and not 0 <= v <= 1:
        return f"{key} is {v}, an accuracy outside [0, 1]"
    return None


def _count(key: str, v: Any) -> str | None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        return f"{key} is {shown_value(v)}, expected an integer >= 0"
    return None


def check_record(rec: Any) -> None:
    """``ValueError`` saying what is wrong if ``rec`` is not a record the readers can use: a key
    missing or of the wrong type, or a value outside its meaning (an accuracy of 79 or -0.5, an
    infinite number, a negative seed or step count)."""
    if not isinstance(rec, dict):
        raise ValueError(f"not a JSON object but {json.dumps(rec)[:60]}")
    missing = [k for k in REQUIRED_KEYS if k not in rec]
    if missing:
        raise ValueError(f"missing keys {missing}")
    for k, (types, said) in [*KEY_TYPES.items(), *((k, t) for k, t in OPTIONAL_TYPES.items() if k in rec)]:
        v = rec[k]
        if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
            raise ValueError(f"{k} is {json.dumps(v)[:60]}, expected {said}")
    problems = [_count("seed", rec["seed"]), _count("steps", rec["steps"]),
                number_problem("wall_time_s", rec["wall_time_s"]), number_problem("chance_acc", rec.get("chance_acc")),
                *(_count(k, rec[k]) for k in OPTIONAL_STEPS if rec.get(k) is not None),
                *(number_problem(f"metrics.{k}", v) for k, v in rec["metrics"].items())]
    if rec["wall_time_s"] is not None and rec["wall_time_s"] < 0:
        problems.append(f"wall_time_s is {rec['wall_time_s']}, expected a number >= 0")
    problem = next((p for p in problems if p), None)
    if problem:
        raise ValueError(problem)


def evaluations_file_problem(path: Path) -> str | None:
    """What is wrong with an ``evaluations.jsonl`` as received, line by line (a missing file: None).
    Each line is a JSON object (the last may be cut short: a run killed mid-write) that
    :func:`evaluation_problem` accepts."""
    try:
        lines = Path(path).read_text().splitlines() if Path(path).exists() else []
    except (OSError, UnicodeDecodeError) as e:
        return f"cannot be read ({e})"
    rows = []
    for i, line in enumerate(lines, 1):
        try:
            rows.append(json.loads(line))
        except (ValueError, RecursionError):
            if i < len(lines):
                return f"line {i} is not JSON: {line[:60]!r}"
    return evaluation_problem(rows)


def evaluation_problem(rows: Any) -> str | None:
    """What is wrong with a run's evaluations (``evaluations.jsonl`` read as a list of objects),
    or None: each is an object with an integer ``step`` >= 0 and numbers (accuracies in [0, 1])."""
    if not isinstance(rows, list):
        return f"not a list of evaluations but {type(rows).__name__}"
    for row in rows:
        if not isinstance(row, dict):
            return f"an evaluation is {json.dumps(row, default=str)[:60]}, not an object"
        if "step" not in row:
            return f"an evaluation has no step: {json.dumps(row, default=str)[:80]}"
        problem = _count("step", row["step"]) or next(
            (p for p in (number_problem(k, v) for k, v in row.items() if k != "step") if p), None)
        if problem:
            return f"the evaluation at step {shown_value(row['step'])}: {problem}"
    return None


def read_records(*roots: str | Path) -> tuple[list[dict[str, Any]], list[tuple[Path, str]]]:
    """All results records under ``roots`` (searched recursively), and the unreadable ones.

    A record that is truncated, not JSON, lacks required keys or holds a value of the wrong type
    (:func:`check_record`) is returned in the second list with the reason, never silently dropped
    or averaged.

    A file reached twice (overlapping roots) is read once; a record identical to one already read
    (a copy of the same run kept elsewhere) is the same run, so it is not returned again: its path
    goes to the first one's ``_copies``.
    """
    good, bad = [], []
    seen_paths: set[Path] = set()
    by_content: dict[str, dict[str, Any]] = {}
    for root in roots:
        root = Path(root)
        paths = [root] if root.is_file() else sorted(root.rglob(RESULTS_FILE))
        for p in paths:
            if (real := p.resolve()) in seen_paths:
                continue
            seen_paths.add(real)
            try:
                rec = json.loads(p.read_text())
                check_record(rec)
            except (OSError, ValueError, RecursionError) as e:
                bad.append((p, str(e)))
                continue
            rec = {k: v for k, v in rec.items() if not str(k).startswith("_")}  # _path, _copies: ours to set
            key = json.dumps(rec, sort_keys=True)
            if key in by_content:
                by_content[key].setdefault("_copies", []).append(str(p))
                continue
            rec["_path"] = str(p)
            by_content[key] = rec
            good.append(rec)
    return good, bad


def runs_without_record(*roots: str | Path) -> list[Path]:
    """Folders under ``roots`` that hold a run (:data:`RUN_MARKERS`) but no ``results.json``:
    runs still going, or killed before they could write one (SIGKILL, out of memory, a node lost)."""
    found: set[Path] = set()
    for root in map(Path, roots):
        if root.is_dir():
            found |= {p.parent for m in RUN_MARKERS for p in root.rglob(m)}
    return sorted(d for d in found if not (d / RESULTS_FILE).exists())
