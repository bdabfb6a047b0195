"""Read a W&B run written in offline mode (``wandb/offline-run-*/run-*.wandb``) without a server.

The ``.wandb`` file is a LevelDB-style log (as wandb's former ``datastore`` module wrote it):
a 7-byte header (``:W&B``, magic 0xBEE1, version 1), then 32 KiB blocks of records, each with
a 7-byte header (crc32, length, type: full/first/middle/last) and a chunk of a serialised
``wandb_internal_pb2.Record``. Tests use this to check what a run sends to W&B, and
``dann-table --wandb-dir`` builds tables from offline runs with it.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Iterator

BLOCK = 32768
HEADER = struct.Struct("<4sHB")
REC = struct.Struct("<IHB")
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _records(path: Path) -> Iterator[bytes]:
    data = Path(path).read_bytes()
    ident, magic, version = HEADER.unpack_from(data, 0)
    if ident != b":W&B" or magic != 0xBEE1:
        raise ValueError(f"{path} is not a W&B run file (header {ident!r} {magic:#x})")
    pos, buf = HEADER.size, b""
    while pos + REC.size <= len(data):
        left = BLOCK - pos % BLOCK
        if left < REC.size:  # block trailer padding
            pos += left
            continue
        _, length, kind = REC.unpack_from(data, pos)
        pos += REC.size
        chunk = data[pos:pos + length]
        pos += length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            buf = chunk
        elif kind == MIDDLE:
            buf += chunk
        elif kind == LAST:
            yield buf + chunk
            buf = b""
        elif kind == 0 and length == 0:  # zero padding at the end of a file
            break


def read_offline_run(run_dir: str | Path) -> dict[str, Any]:
    """``{"name", "group", "job_type", "tags", "config", "summary", "history"}`` of one offline run."""
    from wandb.proto import wandb_internal_pb2 as pb

    run_dir = Path(run_dir)
    files = sorted(run_dir.glob("run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"no run-*.wandb file in {run_dir}")
    out: dict[str, Any] = {"config": {}, "summary": {}, "history": [], "name": None, "group": None,
                           "job_type": None, "tags": []}
    for raw in _records(files[0]):
        r = pb.Record()
        r.ParseFromString(raw)
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out.update(name=r.run.display_name, group=r.run.run_group, job_type=r.run.job_type,
                       tags=list(r.run.tags), id=r.run.run_id, project=r.run.project)
            for item in r.run.config.update:
                out["config"][item.key] = json.loads(item.value_json)
        elif kind == "config":
            for item in r.config.update:
                out["config"][item.key] = json.loads(item.value_json)
        elif kind == "summary":
            for item in r.summary.update:
                key = item.key or "/".join(item.nested_key)
                out["summary"][key] = json.loads(item.value_json)
        elif kind == "history":
            out["history"].append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item})
    if out.get("id") is None:
        raise ValueError(f"{files[0]} holds no run record: the run is still being written (wandb writes the "
                         "file when the run's stream closes, after wandb.finish()) or the file is truncated")
    # config values arrive as {"value": v, "desc": ...}
    out["config"] = {k: (v["value"] if isinstance(v, dict) and "value" in v else v)
                     for k, v in out["config"].items() if not k.startswith("_")}
    return out


def record_from_wandb(config: dict[str, Any], summary: dict[str, Any], where: str) -> dict[str, Any]:
    """A results record (the shape of ``results.json``) from a W&B run's flat config and summary."""
    metrics = {k: float(v) for k, v in summary.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and k.split("/")[0] in ("test", "sa")}
    return {
        "pair": config.get("pair.name"), "method": config.get("method.name"), "seed": config.get("seed"),
        "status": summary.get("status", "finished" if metrics else "unfinished"),
        "selection": summary.get("selection", "last_step"), "config": config, "git_commit": None,
        "steps": summary.get("steps", summary.get("trainer/global_step")), "metrics": metrics,
        "wall_time_s": summary.get("wall_time_s", summary.get("_runtime", 0.0)), "_path": where,
    }


def offline_records(root: str | Path) -> tuple[list[dict[str, Any]], list[tuple[Path, str]]]:
    """Records of every offline W&B run under ``root`` (``**/offline-run-*``), and the unreadable ones."""
    good, bad = [], []
    for run_dir in sorted(Path(root).rglob("offline-run-*")):
        if not run_dir.is_dir():
            continue
        try:
            r = read_offline_run(run_dir)
            good.append(record_from_wandb(r["config"], r["summary"], str(run_dir)))
        except (OSError, ValueError) as e:
            bad.append((run_dir, str(e)))
    return good, bad


def api_records(path: str, group: str | None = None) -> tuple[list[dict[str, Any]], list[tuple[Path, str]]]:
    """Records of the runs of W&B project ``ENTITY/PROJECT`` (optionally one group), via the API."""
    import wandb

    runs = wandb.Api().runs(path, filters={"group": group} if group else None)
    return [record_from_wandb(dict(r.config), dict(r.summary), r.url) for r in runs], []
