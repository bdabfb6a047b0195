"""Sweeps on existing engines: the local device pool (joblib), Optuna search, the SLURM config."""

import os
import subprocess
import sys
from datetime import datetime

import pytest
import yaml
from hydra import compose, initialize_config_dir

from dann.pool import device_slot
from dann.results import read_records
from dann.train import CONF_DIR

SHORT = ["pair=moons", "method=dann", "trainer.max_steps=300", "trainer.val_check_interval=300",
         "trainer.enable_progress_bar=false", "logger=csv"]


def multirun(sweep_dir, *overrides):
    env = dict(os.environ, WANDB_MODE="offline")
    return subprocess.run([sys.executable, "-m", "dann.train", "-m", *SHORT, f"hydra.sweep.dir={sweep_dir}",
                           *overrides], env=env, capture_output=True, text=True, timeout=600, cwd=sweep_dir.parent)


@pytest.mark.slow
def test_gpu_pool_launcher_runs_two_at_a_time_and_reports_a_failure(tmp_path):
    # jobs of ~1,500 steps (several seconds each), so start-up jitter of the workers cannot hide the overlap
    out = multirun(tmp_path / "sweep", "hydra/launcher=gpus", "pool.cpu_jobs=2", "optim.lr=0.5,0.4,0.3,-1",
                   "trainer.max_steps=1500", "trainer.val_check_interval=1500")
    assert out.returncode != 0  # the sweep reports its failed job...
    assert "optim.lr=-1 is invalid" in out.stderr
    records, bad = read_records(tmp_path / "sweep")
    assert not bad and len(records) == 3  # ...and the three good jobs still ran to the end
    assert all(r["status"] == "finished" for r in records)
    spans = sorted((datetime.fromisoformat(r["started_at"]), datetime.fromisoformat(r["finished_at"]))
                   for r in records)
    assert spans[1][0] < spans[0][1], spans  # the first two ran at the same time
    assert len({r["pid"] for r in records}) == 2  # in two worker processes


def test_device_slots_are_exclusive(tmp_path):
    with device_slot(tmp_path, 2) as a, device_slot(tmp_path, 2) as b:
        assert {a, b} == {0, 1}
    with device_slot(tmp_path, 2) as c:
        assert c == 0  # released slots are reused


@pytest.mark.slow
def test_optuna_search_optimises_label_free_objective(tmp_path):
    out = multirun(tmp_path / "opt", "hparams_search=dann_optuna", "hydra.sweeper.n_trials=2")
    assert out.returncode == 0, out.stderr[-3000:]
    best = yaml.safe_load((tmp_path / "opt" / "optimization_results.yaml").read_text())
    records, _ = read_records(tmp_path / "opt")
    assert len(records) == 2
    # the objective is the source accuracy (label-free), not the target's
    assert best["best_value"] == pytest.approx(max(r["metrics"]["test/src_acc"] for r in records))


def test_oracle_search_is_named_oracle():
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["hparams_search=dann_optuna_oracle", "pair=moons"],
                      return_hydra_config=True)
        assert cfg.objective == "test/tgt_acc" and "ORACLE" in cfg.hydra.sweeper.study_name
        cfg = compose("train", overrides=["hparams_search=dann_optuna", "pair=moons"], return_hydra_config=True)
        assert cfg.objective == "test/src_acc"


def test_slurm_launcher_config():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
                      return_hydra_config=True)
    la = cfg.hydra.launcher
    assert la._target_.endswith("SlurmLauncher")
    assert la.gpus_per_node == 1 and la.tasks_per_node == 1 and la.partition == "gpu"
    assert la.max_num_timeout >= 1 and la.additional_parameters.requeue is True
