"""Sweeps on existing engines: the local device pool (joblib), Optuna search, the SLURM config; and our one
launcher, ``hydra/launcher=fork`` (jobs in forked copies of the process)."""

import os
import signal
import subprocess
import sys
import time
from datetime import datetime

import pytest
import yaml
from hydra import compose, initialize_config_dir

from dann.run.launch import device_slot
from dann.records import read_records
from dann.config import CONF_DIR

SHORT = ["pair=moons", "method=dann", "trainer.max_steps=300", "trainer.val_check_interval=300",
         "trainer.enable_progress_bar=false", "logger=csv"]


def multirun(sweep_dir, *overrides):
    env = dict(os.environ, WANDB_MODE="offline")
    return subprocess.run([sys.executable, "-m", "dann.run.train", "-m", *SHORT, f"hydra.sweep.dir={sweep_dir}",
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


@pytest.mark.slow
def test_fork_launcher_runs_jobs_at_once_in_forked_children_with_the_same_results(tmp_path):
    out = multirun(tmp_path / "fork", "hydra/launcher=fork", "pool.cpu_jobs=2", "optim.lr=0.5,0.4,-1",
                   "trainer.max_steps=1500", "trainer.val_check_interval=1500")
    assert out.returncode != 0  # the sweep reports its failed job, with its reason...
    assert "optim.lr=-1 is invalid" in out.stderr
    records, bad = read_records(tmp_path / "fork")
    assert not bad and len(records) == 2 and all(r["status"] == "finished" for r in records)  # ...the others ran
    spans = sorted((datetime.fromisoformat(r["started_at"]), datetime.fromisoformat(r["finished_at"]))
                   for r in records)
    assert spans[1][0] < spans[0][1], spans  # at the same time
    assert len({r["pid"] for r in records}) == 2  # each in a child of its own
    assert all(r["threads"]["jobs"] == 2 for r in records)  # the threads rule counts the jobs beside it
    # the same job under Hydra's basic launcher, in the launching process, gives the same numbers
    alone = multirun(tmp_path / "basic", "optim.lr=0.5", "trainer.max_steps=1500", "trainer.val_check_interval=1500")
    assert alone.returncode == 0, alone.stderr[-3000:]
    [ref], _ = read_records(tmp_path / "basic")
    [forked] = [r for r in records if r["config"]["optim"]["lr"] == 0.5]
    assert forked["metrics"] == ref["metrics"]


def fork_sweep_while_training(sweep, max_steps, n_training, act):
    """A 3-job fork sweep (seeds 0-2, two at once); once ``n_training`` jobs train, ``act(proc)``;
    then the sweep's (exit status, stderr)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "dann.run.train", "-m", *SHORT, f"hydra.sweep.dir={sweep}", "hydra/launcher=fork",
         "pool.cpu_jobs=2", "seed=0,1,2", f"trainer.max_steps={max_steps}", f"trainer.val_check_interval={max_steps}"],
        env=dict(os.environ, WANDB_MODE="offline"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=sweep.parent)
    try:
        deadline = time.time() + 300
        while sum("training:" in p.read_text() for p in sweep.glob("*/train.log")) < n_training:
            assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.2)
        act(proc)
        _, err = proc.communicate(timeout=600)
    finally:
        proc.kill()
    return proc.returncode, err


@pytest.mark.slow
def test_fork_launcher_stops_its_jobs_on_sigterm_and_starts_no_other(tmp_path):
    sweep = tmp_path / "sweep"
    # SIGTERM to the launching process only, as `kill PID` sends it
    code, err = fork_sweep_while_training(sweep, 1000000, 2, lambda proc: proc.send_signal(signal.SIGTERM))
    assert code == 128 + signal.SIGTERM, err[-3000:]
    records, bad = read_records(sweep)
    assert not bad and sorted(r["seed"] for r in records) == [0, 1]  # the third job never started
    assert all(r["status"] == "interrupted" and r["last_checkpoint"] for r in records)  # each stopped as a run stops
    assert not list(sweep.glob("*s2"))
    assert "BrokenPipeError" not in err


def kill_first_child(proc):
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    os.kill(min(int(c) for c in children), signal.SIGKILL)  # job 0, started first: as an OOM killer ends it


@pytest.mark.slow
def test_fork_launcher_reports_a_job_whose_process_died_and_goes_on(tmp_path):
    sweep = tmp_path / "sweep"
    code, err = fork_sweep_while_training(sweep, 2000, 1, kill_first_child)  # no record, no answer
    assert code != 0 and "ended with no answer" in err, err[-3000:]
    records, _ = read_records(sweep)
    finished = sorted(r["seed"] for r in records if r["status"] == "finished")
    assert finished == [1, 2]  # the other jobs ran to the end, the third one started after the death


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


@pytest.mark.slow
def test_multirun_makes_one_wandb_run_per_job_and_table_from_wandb(tmp_path, capsys):
    """A 2-job multirun with W&B offline: 2 runs with the W&B conventions, and the table built
    from those run files equals the one built from the results records."""
    env_out = multirun(tmp_path / "sw", "logger=default", "method=source_only,dann", "logger.wandb.group=unit_sweep",
                       "trainer.max_steps=100", "trainer.val_check_interval=100")
    assert env_out.returncode == 0, env_out.stderr[-3000:]
    from dann.report.cli import main as table
    from dann.report.wandb_offline import offline_records, read_offline_run

    runs = sorted((tmp_path / "sw").rglob("offline-run-*"))
    assert len(runs) == 2
    infos = [read_offline_run(r) for r in runs]
    assert {i["name"] for i in infos} == {"source_only-moons-0", "dann-moons-0"}
    assert {i["group"] for i in infos} == {"unit_sweep"} and {i["job_type"] for i in infos} == {"source_only", "dann"}
    assert all({"pair:moons", "source:moons", "target:moons_rot35", "steps:100"} <= set(i["tags"]) for i in infos)
    for i in infos:
        assert {"test/tgt_acc", "test/src_acc", "test/pad", "steps", "wall_time_s", "status"} <= set(i["summary"])
    recs, bad = offline_records(tmp_path / "sw")
    files, _ = read_records(tmp_path / "sw")
    by = lambda rs: {r["method"]: r["metrics"]["test/tgt_acc"] for r in rs}  # noqa: E731
    assert not bad and by(recs) == pytest.approx(by(files))
    capsys.readouterr()
    assert table(["--wandb-dir", str(tmp_path / "sw")]) == 0
    out = capsys.readouterr().out
    assert "| source_only |" in out and "| dann |" in out
