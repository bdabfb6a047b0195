"""Is the install usable? torch and torchvision must come from one build (this file imports nothing of ours).

torchvision ships compiled operators (``nms``, ``roi_align``, ...) built against one torch
release. Beside another torch (say ``pip install torch`` from PyPI after the CPU index gave
torchvision, or the reverse) they fail to load, torchvision swallows that, and the first line
that registers one of them raises ``RuntimeError: operator torchvision::nms does not exist``
from deep inside ``import torchvision``: a message that names neither package's version nor
the fix. The commands that load data (``dann-train``, ``dann-data``, ``dann-select``,
``dann-bench``, ``scripts/*.py``) import torchvision anyway, so checking it first costs nothing.
"""

from __future__ import annotations

import sys
from importlib import metadata

#: torchvision 0.N is built for torch 2.(N - 15): 0.24 for 2.9, 0.29 for 2.14 (since torch 2.0 / 0.15)
TORCHVISION_MINOR_OFFSET = 15
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def torchvision_for(torch_version: str) -> str:
    """The torchvision release series built for ``torch_version``: ``2.13.0+cpu`` -> ``0.28.*``."""
    major, minor = (int(x) for x in torch_version.split("+")[0].split(".")[:2])
    return f"0.{minor + TORCHVISION_MINOR_OFFSET}.*" if major == 2 else "?"


def torch_pair_problem() -> str | None:
    """None when ``import torchvision`` works and its compiled operators loaded; else what is wrong
    and how to fix it, in one line."""
    try:
        import torchvision  # noqa: F401  (the import is the check: it registers the operators)
        from torchvision.extension import _has_ops
        ok, why = _has_ops(), "its compiled operators did not load"
    except ImportError as e:
        if getattr(e, "name", None) == "torchvision":
            return "torchvision is not installed: pip install -e . installs it (or, without a GPU, first " \
                   f"pip install torch torchvision --index-url {CPU_INDEX})"
        ok, why = False, f"{type(e).__name__}: {e}"
    except (RuntimeError, OSError) as e:  # e.g. "operator torchvision::nms does not exist"
        ok, why = False, f"{type(e).__name__}: {e}"
    if ok:
        return None
    torch = sys.modules.get("torch")  # its __version__ names the build (+cpu, +cu130) where metadata may not
    t, tv = getattr(torch, "__version__", None) or _version("torch"), _version("torchvision")
    want = torchvision_for(t) if t != "?" else "?"
    return (f"torch {t} and torchvision {tv} are not one build ({why}): install the pair together from one "
            f"index, e.g. pip install --force-reinstall 'torch=={t.split('+')[0]}' 'torchvision=={want}' "
            f"--index-url {CPU_INDEX} (without a GPU; with one, from PyPI: drop --index-url)")


def require_torch_pair(prog: str) -> None:
    """Exit with status 2 and one line on stderr, ``<prog>: error: ...``, when torchvision does not
    work with the installed torch."""
    problem = torch_pair_problem()
    if problem:
        print(f"{prog}: error: {problem}", file=sys.stderr)
        raise SystemExit(2)
