"""The per-run results record (``results.json``) and helpers to read many of them."""

from __future__ import annotations

import json
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
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


def check_record(rec: Any) -> None:
    """``ValueError`` saying what is wrong if ``rec`` is not a record the readers can use."""
    if not isinstance(rec, dict):
        raise ValueError(f"not a JSON object but {json.dumps(rec)[:60]}")
    missing = [k for k in REQUIRED_KEYS if k not in rec]
    if missing:
        raise ValueError(f"missing keys {missing}")
    for k, (types, said) in KEY_TYPES.items():
        v = rec[k]
        if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
            raise ValueError(f"{k} is {json.dumps(v)[:60]}, expected {said}")
    for k, v in rec["metrics"].items():
        if not (v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))):
            raise ValueError(f"metrics.{k} is {json.dumps(v)[:60]}, expected a number or null")


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
            except (OSError, ValueError) as e:
                bad.append((p, str(e)))
                continue
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
