"""The CPU threads a run chooses (dann/run/threads.py), its record, and a start-up without W&B."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import make_cfg
from dann.config import ConfigError, validate
from dann.run.threads import available_cpus, cgroup_cpu_limit, choose_threads
from dann.run.train import train


@pytest.mark.parametrize("requested, arch, cpus, jobs, expected", [
    ("auto", "shallow", 16, 1, 1),     # the moons MLP gains nothing from a second thread
    ("auto", "mnist", 2, 1, 2),        # alone on two cores: both
    ("auto", "mnist", 2, 2, 1),        # two runs of a pool on two cores: one each
    ("auto", "mnist", 16, 3, 5),       # the cores shared out, rounded down
    ("auto", "svhn", 1, 4, 1),         # never below one
    (3, "shallow", 16, 1, 3),          # an explicit count wins, whatever the network
    (8, "mnist", 2, 2, 8),
])
def test_the_thread_count_follows_cpus_network_and_pool(requested, arch, cpus, jobs, expected):
    assert choose_threads(requested, arch, cpus, jobs) == expected


def test_available_cpus_takes_the_smallest_limit():
    assert available_cpus({}, affinity=8, quota=None) == (8, "affinity")
    assert available_cpus({"SLURM_CPUS_PER_TASK": "3"}, affinity=8, quota=None) == (3, "SLURM_CPUS_PER_TASK")
    assert available_cpus({"SLURM_CPUS_PER_TASK": "3"}, affinity=8, quota=1.5) == (1, "cgroup quota")
    assert available_cpus({"SLURM_CPUS_PER_TASK": "16"}, affinity=4, quota=None) == (4, "affinity")
    assert available_cpus({"SLURM_CPUS_PER_TASK": ""}, affinity=2, quota=None) == (2, "affinity")


def test_cgroup_quota_is_read_from_v2_and_v1_files(tmp_path):
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("250000 100000\n")
    assert cgroup_cpu_limit(v2) == 2.5
    (v2 / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(v2) is None
    v1 = tmp_path / "v1" / "cpu"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("50000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(tmp_path / "v1") == 0.5
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_limit(tmp_path / "v1") is None
    assert cgroup_cpu_limit(tmp_path / "none") is None


@pytest.mark.parametrize("value", ["many", 0, -2, 1.5])
def test_a_bad_thread_count_is_refused_naming_the_key(tmp_path, value):
    with pytest.raises(ConfigError, match="threads="):
        validate(make_cfg(tmp_path, f"threads={value}"))


def test_the_record_carries_the_threads_and_the_run_used_them(tmp_path):
    before = torch.get_num_threads()
    try:
        rec = train(make_cfg(tmp_path / "a", "pair=moons", "trainer.max_steps=20", "trainer.val_check_interval=20"))
        assert rec["threads"]["threads"] == 1 and rec["threads"]["requested"] == "auto"
        assert torch.get_num_threads() == 1
        rec = train(make_cfg(tmp_path / "b", "pair=moons", "threads=2", "trainer.max_steps=20",
                             "trainer.val_check_interval=20"))
        on_disk = json.loads((tmp_path / "b" / "results.json").read_text())
        assert on_disk["threads"]["threads"] == 2 and on_disk["threads"]["requested"] == 2
        assert on_disk["threads"]["cpus"] >= 1 and on_disk["threads"]["jobs"] == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_run_with_the_csv_logger_never_imports_wandb(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(os.path.dirname(__file__))!r})
        from conftest import make_cfg
        from dann.run.train import train
        train(make_cfg({str(tmp_path)!r}, "pair=moons", "logger=csv", "trainer.max_steps=10",
                       "trainer.val_check_interval=10"))
        print("wandb" in sys.modules, "matplotlib.pyplot" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    wandb_loaded, _ = out.stdout.split()[-2:]
    assert wandb_loaded == "False", out.stdout
    assert (tmp_path / "results.json").exists()


@pytest.mark.parametrize("env, expected", [
    # libgomp (PyTorch's Linux wheels) spins ~10 us at a barrier, then sleeps; other runtimes sleep at once
    ({}, "PASSIVE 1000"),
    ({"OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE None"),  # the user's choice is kept
    ({"GOMP_SPINCOUNT": "300000"}, "None 300000"),   # so is a spin count (libgomp's own default wait)
])
def test_importing_dann_sets_a_short_spin_then_sleep_before_torch_loads(env, expected):
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    code = "import os, dann, torch; print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(base, **env))
    assert " ".join(out.stdout.split()[-2:]) == expected


def test_the_record_carries_the_wait_policy(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(os.path.dirname(__file__))!r})
        from conftest import make_cfg
        from dann.run.train import train
        train(make_cfg({str(tmp_path)!r}, "pair=moons", "logger=csv", "trainer.max_steps=10",
                       "trainer.val_check_interval=10"))
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    rec = json.loads((tmp_path / "results.json").read_text())
    assert rec["threads"]["omp_wait_policy"] == "PASSIVE" and rec["threads"]["gomp_spincount"] == "1000"
