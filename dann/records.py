"""The per-run results record (``results.json``) and helpers to read many of them."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

RESULTS_FILE = "results.json"
REQUIRED_KEYS = ("pair", "method", "seed", "status", "config", "git_commit", "steps", "metrics", "wall_time_s")


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


def read_records(*roots: str | Path) -> tuple[list[dict[str, Any]], list[tuple[Path, str]]]:
    """All results records under ``roots`` (searched recursively), and the unreadable ones.

    A record that is truncated, not JSON, or lacks required keys is returned in the second
    list with the reason, never silently dropped or averaged.
    """
    good, bad = [], []
    for root in roots:
        root = Path(root)
        paths = [root] if root.is_file() else sorted(root.rglob(RESULTS_FILE))
        for p in paths:
            try:
                rec = json.loads(p.read_text())
                missing = [k for k in REQUIRED_KEYS if k not in rec]
                if missing:
                    raise ValueError(f"missing keys {missing}")
            except (OSError, ValueError) as e:
                bad.append((p, str(e)))
                continue
            rec["_path"] = str(p)
            good.append(rec)
    return good, bad
