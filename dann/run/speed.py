"""Optional speed-ups of the networks, each a config flag under ``speed:`` (conf/train.yaml).

* ``speed.compile``: ``torch.compile`` the feature extractor, label predictor and domain
  classifier (``false`` | ``default`` | ``reduce-overhead`` | ``max-autotune`` |
  ``max-autotune-no-cudagraphs``). On a GPU, ``reduce-overhead`` also captures each compiled
  network in CUDA graphs, which removes most kernel-launch overhead of these small nets.
* ``speed.channels_last``: NHWC memory format for the conv nets' weights and inputs (helps
  on GPU tensor cores; a no-op for the fully-connected ``shallow`` net).
* ``speed.keep_freed_memory`` (on by default): the process keeps the CPU memory a step frees
  for the next step instead of handing it back to the OS (glibc ``mallopt``; see
  :func:`keep_freed_memory`). It changes no number, only the system time of a CPU step.

compile and channels_last change what is computed only by float rounding (tests/test_speed.py);
both are off by default, so results stay bit-identical to earlier runs. On a 2-core CPU (MNIST
net, 64+64) compile was slower per step and channels_last faster; measure with ``dann-bench
--compile MODE`` / ``--channels-last``. The GRL and the losses stay eager, outside the compiled graphs; only the
three networks are compiled.

Compilation is done in place with :meth:`torch.nn.Module.compile`, so the modules stay the same
objects and ``state_dict`` keys are unchanged (no ``_orig_mod.`` prefix): checkpoints move
freely between compiled and eager runs.
"""

from __future__ import annotations

import ctypes
import functools
import inspect
import sys
import warnings
from typing import Any

import torch
from torch import nn

from dann.config import COMPILE_MODES, compile_mode  # noqa: F401 (the config validates speed.compile with it)

NETS = ("features", "classifier", "discriminator")


@functools.lru_cache(maxsize=None)
def check_compile_available(probe: bool = False) -> str | None:
    """None when ``torch.compile`` (inductor) can run here, else why not (the reason tests skip with).

    Checks, cheaply, that the inductor backend imports, that a C++ compiler is found and that
    the Python headers it compiles against exist. ``probe=True`` also compiles and runs a tiny
    function (the real thing: several seconds, tens with a cold compile cache).
    """
    import sysconfig
    from pathlib import Path

    try:
        import torch._dynamo  # noqa: F401
        import torch._inductor  # noqa: F401
        from torch._inductor import cpp_builder
    except Exception as e:  # noqa: BLE001
        return f"torch.compile unavailable: importing the inductor backend failed ({type(e).__name__}: {e})"
    try:
        cxx = cpp_builder.get_cpp_compiler()
    except Exception as e:  # noqa: BLE001
        return f"torch.compile unavailable: no C++ compiler found ({type(e).__name__}: {e})"
    include = sysconfig.get_paths().get("include")
    if not include or not (Path(include) / "Python.h").exists():
        return f"torch.compile unavailable: Python headers (Python.h) not found in {include}"
    if probe:
        try:
            fn = torch.compile(lambda x: torch.relu(x) * 2 + 1, backend="inductor", fullgraph=True)
            x = torch.randn(8)
            if not torch.allclose(fn(x), torch.relu(x) * 2 + 1):
                return "torch.compile gave a wrong result on a tiny function"
        except Exception as e:  # noqa: BLE001
            msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
            return f"torch.compile failed on a tiny function (compiler {cxx}): {type(e).__name__}: {msg}"
    return None


def to_channels_last(batch: Any) -> Any:
    """``batch`` with every 4-D tensor in NHWC memory format (same values and shape).

    Accepts a tensor, or a dict/list/tuple of them (training batches ``{src_x, ...}``,
    evaluation batches ``(x, y)``); other tensors and values pass through unchanged.
    """
    if isinstance(batch, torch.Tensor):
        return batch.contiguous(memory_format=torch.channels_last) if batch.dim() == 4 else batch
    if isinstance(batch, dict):
        return {k: to_channels_last(v) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_channels_last(v) for v in batch)
    return batch


def _channels_last_input(module: nn.Module, args: tuple) -> tuple | None:
    if args and isinstance(args[0], torch.Tensor) and args[0].dim() == 4:
        return (args[0].contiguous(memory_format=torch.channels_last), *args[1:])
    return None


#: glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


@functools.lru_cache(maxsize=None)
def keep_freed_memory() -> str | None:
    """Make this process keep the CPU memory it frees, for reuse, instead of returning it to the OS.

    glibc serves large allocations (over its mmap threshold, 128 KiB to 32 MiB) with fresh
    ``mmap`` pages and returns freed memory above its trim threshold to the OS. A training step
    of these nets allocates and frees tens of MB of activations and gradients, so every step the
    kernel maps and zeroes the same pages again (a fifth of a CPU step of the MNIST net:
    experiments/notes/history.md). After this call large allocations come from the heap and freed
    memory stays in the process (up to 1 GiB above the heap top). Nothing computed changes; the
    process holds its peak memory until it exits.

    Process-wide and for good (call it once; later calls do nothing). Returns None when applied,
    else why not (not Linux with glibc).
    """
    if not sys.platform.startswith("linux"):
        return f"keep_freed_memory needs Linux with glibc (this is {sys.platform})"
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError) as e:
        return f"keep_freed_memory needs glibc's mallopt ({type(e).__name__}: {e})"
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if not (mallopt(_M_MMAP_MAX, 0) and mallopt(_M_TRIM_THRESHOLD, 1 << 30)):
        return "glibc's mallopt refused M_MMAP_MAX / M_TRIM_THRESHOLD"
    return None


def apply_speed(model, compile: str | bool | None = False, channels_last: bool = False,
                keep_memory: bool = False, convert_inputs: bool = True):
    """Apply the ``speed:`` options to ``model`` in place and return it.

    ``model`` is a :class:`dann.methods.DAMethod` (or anything with ``features``,
    ``classifier`` and ``discriminator`` modules, e.g. :class:`dann.models.Nets`);
    ``discriminator`` may be None. Call it once, after building the model and before
    training (before ``Trainer.fit``); the optimizer may be built before or after.

    * ``channels_last``: converts the conv weights to NHWC and, with ``convert_inputs``, adds
      a forward pre-hook on ``features`` that converts its 4-D input to NHWC (a no-op copy-free
      check when the data path already yields NHWC batches, see :func:`to_channels_last`).
    * ``compile``: ``nn.Module.compile(mode=...)`` on each network: compiled in place,
      ``state_dict`` keys unchanged.
    * ``keep_memory``: :func:`keep_freed_memory` (process-wide); where it cannot apply, a
      warning says why and training goes on.
    """
    mode = compile_mode(compile)
    if not isinstance(channels_last, bool):
        raise ValueError(f"speed.channels_last={channels_last!r} is invalid; allowed: true, false")
    if getattr(model, "_dann_speed", None) is not None:
        raise RuntimeError(f"apply_speed was already applied to this model ({model._dann_speed})")
    nets = [getattr(model, n) for n in NETS]
    nets = [m for m in nets if m is not None]
    if channels_last:
        for m in nets:
            m.to(memory_format=torch.channels_last)  # converts 4-D (conv) weights only
        if convert_inputs:
            model.features.register_forward_pre_hook(_channels_last_input)
    if mode is not None:
        reason = check_compile_available()
        if reason is not None:
            raise RuntimeError(f"speed.compile={compile!r} asked for, but {reason}; set speed.compile=false")
        kw: dict[str, Any] = {"mode": mode}
        if "isolate_recompiles" in inspect.signature(torch.compile).parameters:
            # The three networks share one code object (nn.Module._call_impl): without this, their
            # train/eval/no-grad/batch-size variants all count against one recompile limit (8)
            kw["isolate_recompiles"] = True
        for m in nets:
            m.compile(**kw)
    kept = False
    if keep_memory:
        reason = keep_freed_memory()
        if reason is not None:
            warnings.warn(f"speed.keep_freed_memory: {reason}; going on without it", stacklevel=2)
        kept = reason is None
    model._dann_speed = {"compile": mode or False, "channels_last": channels_last, "keep_freed_memory": kept}
    return model


def speed_options(cfg) -> dict[str, Any]:
    """The ``speed:`` options of a composed config as :func:`apply_speed` keywords (off when absent)."""
    sp = cfg.get("speed") or {}
    return {"compile": sp.get("compile", False), "channels_last": bool(sp.get("channels_last", False)),
            "keep_memory": bool(sp.get("keep_freed_memory", False))}


def speed_settings(model) -> dict[str, Any] | None:
    """What :func:`apply_speed` applied to ``model`` (None when it was not called)."""
    return getattr(model, "_dann_speed", None)
