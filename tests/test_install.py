"""A torch/torchvision pair from different builds is named, with its fix, in one line (exit 2).

How the failure is provoked: a torch of another build makes torchvision's compiled library
(``_C_stable.so``) fail to load (an ``OSError`` from the dynamic loader: undefined symbols);
torchvision swallows that, and its next import line raises ``RuntimeError: operator
torchvision::nms does not exist``. The tests take the installed torchvision and shadow it, on
``PYTHONPATH``, by a copy made of links to its files except that library, which is replaced by
a file the loader refuses: the same failure through the same lines of torchvision, without
installing a second 700 MB torch for every test run. (The real mismatched pair, torch 2.13.0+cpu
beside torchvision 0.29.1, fails with the same message; the check's line for it is in
docs/how-to/install.md.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from dann.install import torch_pair_problem, torchvision_for

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def broken_env(tmp_path_factory) -> dict[str, str]:
    """An environment whose ``import torchvision`` fails as beside a torch of another build."""
    import torchvision

    real = Path(torchvision.__file__).parent
    shadow = tmp_path_factory.mktemp("shadow") / "torchvision"
    shadow.mkdir()
    libs = [p for p in real.iterdir() if p.name.startswith("_C") and p.suffix in (".so", ".pyd")]
    assert libs, f"no compiled library in {real}: torchvision's layout changed, update this test"
    for p in real.iterdir():
        if p not in libs:
            (shadow / p.name).symlink_to(p)
    for p in libs:
        (shadow / p.name).write_bytes(b"not a library of this torch build\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(shadow.parent), str(ROOT), env.get("PYTHONPATH", "")])
    env.pop("TORCHVISION_WARN_WHEN_EXTENSION_LOADING_FAILS", None)
    return env


def _python(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def test_the_provoked_failure_is_the_one_users_meet(broken_env):
    p = _python(broken_env, "-c", "import torchvision")
    assert p.returncode == 1
    assert p.stderr.strip().splitlines()[-1] == "RuntimeError: operator torchvision::nms does not exist", p.stderr


@pytest.mark.parametrize("command", ["train", "data", "select", "bench"])
def test_each_data_command_names_the_pair_and_the_fix_in_one_line(broken_env, command):
    from importlib.metadata import version

    import torch

    p = _python(broken_env, "-c", f"import sys; sys.argv = ['dann-{command}']; "
                                  f"from dann.commands import {command}; sys.exit({command}())")
    assert p.returncode == 2, p.stderr[-3000:]
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr[-3000:]
    assert lines[0].startswith(f"dann-{command}: error: torch {torch.__version__} and torchvision "
                               f"{version('torchvision')} are not one build (RuntimeError: operator "
                               "torchvision::nms does not exist): install the pair together"), lines[0]
    assert f"'torchvision=={version('torchvision').rsplit('.', 1)[0]}.*'" in lines[0]
    assert "pip install --force-reinstall" in lines[0] and "--index-url https://download.pytorch.org/whl/cpu" in lines[0]


@pytest.mark.parametrize("script", ["evaluate.py", "tsne.py"])
def test_the_scripts_check_the_pair_too(broken_env, tmp_path, script):
    args = ["--domain", "mnist"] if script == "evaluate.py" else []
    p = _python(broken_env, str(ROOT / "scripts" / script), str(tmp_path), *args)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr[-3000:]
    assert p.stderr.startswith(f"{script}: error: torch "), p.stderr


def test_a_working_pair_passes_and_the_release_rule_holds_for_it():
    import torch
    import torchvision

    assert torch_pair_problem() is None
    assert torchvision_for(torch.__version__) == torchvision.__version__.rsplit(".", 1)[0] + ".*"
    assert torchvision_for("2.13.0+cpu") == "0.28.*" and torchvision_for("2.9.1") == "0.24.*"


def test_the_console_scripts_that_load_data_go_through_the_check():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for name in ("dann-train", "dann-data", "dann-select", "dann-bench"):
        assert scripts[name] == f"dann.commands:{name.split('-')[1]}", (name, scripts[name])
    assert scripts["dann-table"] == "dann.report.cli:cli"  # reads records only: no torchvision
