"""The shell scripts of experiments/ and .ci: they parse, and the GPU check's input errors are clear
and leave nothing behind. (The GPU check itself is run end to end only by hand: on a CPU with
GPU_CHECK_STEPS=20 it takes minutes, see experiments/benchmarks/README.md.)"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted([*ROOT.glob("experiments/**/*.sh"), ROOT / ".ci" / "run"])
GPU_CHECK = ROOT / "experiments" / "benchmarks" / "gpu_check.sh"
GPU_PREPARE = ROOT / "experiments" / "benchmarks" / "gpu_prepare.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_script_parses(script):
    r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_gpu_check_stages_in_its_header_are_the_ones_it_has():
    text = GPU_CHECK.read_text()
    defined = set(re.findall(r"^stage_(\w+)\(\)", text, flags=re.M))
    documented = set(re.findall(r"^#   (\w+) {2,}", text, flags=re.M))
    assert defined == documented == {"setup", "bench", "run", "sweep", "kstudy"}


def test_gpu_check_unknown_stage_is_refused_before_anything_runs(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    r = subprocess.run(["bash", str(GPU_CHECK), str(out), "setup sweeep"], capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "GPU_CHECK_WORK": str(work)})
    assert r.returncode == 2
    assert "unknown stage 'sweeep'" in r.stderr and "setup bench run sweep kstudy" in r.stderr
    assert not out.exists() and not work.exists()


def test_gpu_prepare_names_the_missing_file_and_writes_nothing(tmp_path):
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)
    before = {p.name for p in ROOT.iterdir()}
    r = subprocess.run(["bash", str(GPU_PREPARE), str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2
    assert str(tmp_path / "MNIST/raw/train-images-idx3-ubyte.gz") in r.stderr
    assert {p.name for p in ROOT.iterdir()} == before
