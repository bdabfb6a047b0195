"""Checkpoint files: read without running anything in them, written whole or not at all.

A checkpoint is a pickle. ``torch.load(weights_only=False)`` rebuilds any object the file
names, so a ``last.ckpt`` received from someone else can run code on load. Every checkpoint
this package reads goes through :func:`load_checkpoint` (``weights_only=True``: tensors and
plain data only), Lightning's resume included (:class:`SafeCheckpointIO` is the trainer's
checkpoint plugin, whatever ``weights_only`` Lightning asks for). Our checkpoints hold nothing
else: state dicts, loop counters, the RNG states as lists, the resolved config.

Lightning writes a checkpoint through fsspec, to a temporary file in the system temp folder
that is then moved: on another file system the move is a copy, and a process killed during
it leaves half a ``last.ckpt``. :class:`SafeCheckpointIO` writes beside the file and renames.
"""

from __future__ import annotations

import errno
import os
import pickle
import re
import shutil
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from dann.errors import CheckpointError

#: the run's resolved config, saved in each of its checkpoints so that a resume can compare it
CONFIG_KEY = "dann_config"


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """The checkpoint at ``path``, read with ``weights_only=True``; :class:`CheckpointError`
    if it holds anything else (nothing in it is run) or is not a readable checkpoint."""
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message names the object ("Unsupported global: GLOBAL builtins.open ..."); its advice
        # to allowlist that object is left out: here the object is the attack
        found = re.search(r"Unsupported global: (GLOBAL )?([\w.]+)", str(e))
        what = f"it names {found.group(2)}" if found else ""
        raise CheckpointError(
            f"checkpoint {path} refused: it holds objects other than tensors and plain data"
            + (f" ({what})" if what else "") + "; only a pickle can build those, and a pickle can run any code, "
            "so it was not loaded and nothing in it ran. Use checkpoints written by dann-train; if you trust "
            "this file, extract its state_dict yourself.") from None
    except Exception as e:  # noqa: BLE001 - truncated (OSError, RuntimeError, EOFError...) or not a torch file
        why = (str(e).splitlines() or [""])[0]
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(e).__name__}: {why}); "
                              f"it may be truncated (a copy or a write cut short) or not a checkpoint. Restore it, "
                              f"resume from another checkpoint (resume=PATH), or delete it to train this run "
                              f"again from step 0") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(f"checkpoint {path} refused: not a Lightning checkpoint (no state_dict)")
    return ckpt


def fit_problems(model: torch.nn.Module, state_dict: dict[str, Any]) -> list[str]:
    """How ``state_dict`` does not fit ``model`` (weights missing on either side, other shapes); empty if it fits."""
    have = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(getattr(v, "shape", ())) for k, v in state_dict.items()}
    problems = []
    lacks, extra = sorted(set(have) - set(got)), sorted(set(got) - set(have))
    if lacks:
        problems.append("the network has weights the checkpoint lacks: " + ", ".join(lacks))
    if extra:
        problems.append("the checkpoint has weights the network lacks: " + ", ".join(extra))
    shapes = [f"{k} {got[k]} vs {have[k]}" for k in sorted(set(have) & set(got)) if have[k] != got[k]]
    if shapes:
        problems.append("shapes differ (checkpoint vs network): " + ", ".join(shapes))
    return problems


def tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors in ``obj`` (dicts, lists, tuples walked): what a checkpoint of it needs at least."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def _size(n: float) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def no_space(path: Path, need: int) -> OSError:
    free = shutil.disk_usage(path.parent).free
    kept = f"the last checkpoint {path} is kept" if path.exists() else "no checkpoint had been written"
    return OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)}: cannot write checkpoint {path} (about "
                                 f"{_size(need)}; {_size(free)} free); {kept}. Free space, then resume=auto")


def save_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> None:
    """Write ``checkpoint`` to a temporary file in ``path``'s folder, flush it to disk, rename it:
    ``path`` holds the old checkpoint or the new one, never part of one.

    A full disk is ``OSError(ENOSPC)`` saying so (torch's own error is an obscure RuntimeError);
    the old checkpoint is kept, and what the failed write took is freed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    need = max(tensor_bytes(checkpoint), path.stat().st_size if path.exists() else 0)  # the last one: a good guess
    if shutil.disk_usage(path.parent).free < need:
        raise no_space(path, need)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (RuntimeError, OSError) as e:
        if isinstance(e, OSError) and e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        written = tmp.stat().st_size if tmp.exists() else 0
        if isinstance(e, OSError) or shutil.disk_usage(path.parent).free + written < need + 2**20:
            tmp.unlink(missing_ok=True)
            raise no_space(path, need) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O for local run folders: :func:`save_checkpoint` and :func:`load_checkpoint`."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("SafeCheckpointIO takes no storage_options")
        save_checkpoint(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        # weights_only=True whatever Lightning asks (some versions ask for False)
        return load_checkpoint(path, map_location=map_location or "cpu")



class SaveConfig(pl.Callback):
    """Put the run's resolved config in each of its checkpoints (:data:`CONFIG_KEY`), for
    :func:`dann.run.resume.check_resume` to compare a resume's config with."""

    def __init__(self, config: dict[str, Any]):
        self.config = config

    def on_save_checkpoint(self, trainer, module, checkpoint: dict[str, Any]) -> None:
        checkpoint[CONFIG_KEY] = self.config
