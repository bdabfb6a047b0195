"""SLURM for real: `dann-train -m ... hydra/launcher=slurm` through hydra's submitit launcher and
real sbatch/srun, on a running cluster (scripts/slurm_cluster.sh starts one on this machine).

Without a cluster these tests are skipped with the reason; with DANN_REQUIRE_SLURM=1 (set by
.ci/run after it started the cluster) a missing cluster is a failure instead.

Every job runs on CPU (gpus_per_node=null, 1 CPU and 1 GB per task). The cluster holds a
requeued job for about 2 minutes before it may start again (slurmctld sets its begin time);
these tests let it start at once with `scontrol update JobId=... StartTime=now`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import assert_last_checkpoint_matches_record, make_cfg
from dann.run.train import train

REPO = Path(__file__).resolve().parent.parent
RUN = ["pair=moons", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "logger=csv"]
# the documented launcher, fitted to a CPU node: no GPU, one CPU and 1 GB per task
SLURM = ["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=null", "hydra.launcher.cpus_per_task=1",
         "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10"]

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def slurm_env() -> dict[str, str]:
    """The environment of the launcher, which sbatch hands on to the jobs: this checkout's
    package first on PYTHONPATH (installed editable or not), W&B offline, and the cluster
    of scripts/slurm_cluster.sh when no SLURM_CONF is set."""
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    own = Path(env.get("DANN_SLURM_DIR", "/tmp/dann-slurm")) / "slurm.conf"
    if "SLURM_CONF" not in env and own.exists():
        env["SLURM_CONF"] = str(own)
    return env


ENV = slurm_env()


def run_slurm(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), env=ENV, capture_output=True, text=True, timeout=timeout)


def cluster_problem() -> str | None:
    """Why no SLURM job can run here, or None."""
    try:
        import hydra_plugins.hydra_submitit_launcher  # noqa: F401
    except ImportError:
        return "hydra-submitit-launcher is not installed (pip install -e '.[slurm]')"
    missing = [c for c in ("sinfo", "sbatch", "srun", "scontrol", "scancel") if not shutil.which(c)]
    if missing:
        return (f"no SLURM client ({', '.join(missing)} not on PATH): apt-get install slurm-wlm munge, "
                "then scripts/slurm_cluster.sh start")
    try:
        out = run_slurm("sinfo", "-h", "-o", "%T", timeout=20)
    except subprocess.TimeoutExpired:
        return "the cluster does not answer: sinfo took more than 20 s"
    if out.returncode != 0:
        return (f"the cluster does not answer (sinfo: {out.stderr.strip()[-300:]}); start one with "
                "scripts/slurm_cluster.sh start, or set SLURM_CONF")
    states = out.stdout.split()
    if not any(s.rstrip("*~#").startswith(("idle", "mixed", "allocated")) for s in states):
        return f"no node of the cluster is up (sinfo node states: {states})"
    return None


@pytest.fixture(scope="module", autouse=True)
def cluster():
    why = cluster_problem()
    if why:
        if os.environ.get("DANN_REQUIRE_SLURM") == "1":
            pytest.fail(f"DANN_REQUIRE_SLURM=1 but {why}")
        pytest.skip(why)


@pytest.fixture
def sweeps():
    """Launch sweeps in the background; at the end of the test, cancel every job they left on
    the cluster (a failed test must not keep the node busy for the next one)."""
    launched: list[tuple[subprocess.Popen, Path]] = []

    def launch(sweep_dir: Path, *overrides: str) -> subprocess.Popen:
        sweep_dir.parent.mkdir(parents=True, exist_ok=True)
        log = (sweep_dir.parent / f"{sweep_dir.name}.launcher.log").open("w")
        proc = subprocess.Popen([sys.executable, "-m", "dann.run.train", "-m", *RUN, *SLURM,
                                 f"hydra.sweep.dir={sweep_dir}", *overrides],
                                env=ENV, cwd=sweep_dir.parent, stdout=log, stderr=subprocess.STDOUT, text=True)
        launched.append((proc, sweep_dir))
        return proc

    yield launch
    for proc, sweep_dir in launched:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.returncode != 0:
            ids = {j.split("_")[0] for j in slurm_jobs(sweep_dir)}
            if ids:
                run_slurm("scancel", *sorted(ids))


def finish(proc: subprocess.Popen, sweep_dir: Path, timeout: float) -> str:
    """Wait for the launcher; its output (the launcher log). Fails with that output on a timeout."""
    log = sweep_dir.parent / f"{sweep_dir.name}.launcher.log"
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the sweep did not end in {timeout} s; squeue:\n{run_slurm('squeue').stdout}\n"
                    f"launcher output:\n{log.read_text()[-4000:]}\njob logs: {sweep_dir / '.submitit'}")
    return log.read_text()


def slurm_jobs(sweep_dir: Path) -> list[str]:
    """The sweep's SLURM job ids, from submitit's folders: ARRAY_TASK (12_0) for a sweep of several
    jobs (one array), a plain id for a sweep of one."""
    return sorted(p.parent.name for p in (sweep_dir / ".submitit").glob("*/*_submitted.pkl"))


def job(jid: str) -> dict[str, str]:
    """`scontrol show job` as a dict (finished jobs stay visible MinJobAge seconds)."""
    out = run_slurm("scontrol", "show", "job", "-o", jid)
    assert out.returncode == 0, out.stderr
    return dict(tok.split("=", 1) for tok in out.stdout.split() if "=" in tok)


def wait_for(cond, timeout: float, what: str, every: float = 0.2):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = cond()
        if v:
            return v
        time.sleep(every)
    pytest.fail(f"{what}: not after {timeout} s; squeue:\n{run_slurm('squeue').stdout}")


def start_requeued_now(jid: str) -> dict[str, str]:
    """Wait until the requeued job is pending again, then let it start now instead of ~2 minutes later."""
    info = wait_for(lambda: (lambda j: j if j["JobState"] == "PENDING" else None)(job(jid)), 60,
                    f"job {jid} pending again after its requeue")
    out = run_slurm("scontrol", "update", f"JobId={jid}", "StartTime=now")
    assert out.returncode == 0, out.stderr
    return info


def job_logs(sweep_dir: Path, jid: str) -> str:
    """What the job's tasks wrote (all attempts: submitit opens its logs in append mode)."""
    return "".join(p.read_text() for p in sorted((sweep_dir / ".submitit" / jid).glob("*_log.*")))


def read_record(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def test_sweep_of_four_jobs_on_slurm(tmp_path, sweeps):
    sw = tmp_path / "sweep"
    proc = sweeps(sw, "method=source_only,dann", "seed=0,1", "trainer.max_steps=200",
                  "trainer.val_check_interval=100")
    out = finish(proc, sw, 300)
    assert proc.returncode == 0, out[-4000:]
    from dann.records import read_records

    records, bad = read_records(sw)
    assert not bad and len(records) == 4
    assert all(r["status"] == "finished" and r["steps"] == 200 for r in records)
    assert {(r["method"], r["seed"]) for r in records} == {(m, s) for m in ("source_only", "dann") for s in (0, 1)}
    # the summary of the sweep, printed by the launching process and written beside the runs
    summary = (sw / "summary.md").read_text()
    assert summary.count("| moons |") == 4 and summary.count("| finished |") == 4
    assert "Results of the sweep" in out
    # each job was a task of one SLURM array, ran on a node of the cluster and logged there
    tasks = slurm_jobs(sw)
    assert len(tasks) == 4 and len({t.split("_")[0] for t in tasks}) == 1, tasks
    nodes = set(run_slurm("sinfo", "-h", "-N", "-o", "%N").stdout.split())
    assert {r["host"] for r in records} <= nodes
    for t in tasks:
        assert (sw / ".submitit" / t / f"{t}_0_result.pkl").exists()
        assert "on moons seed" in job_logs(sw, t)
        assert job(t)["JobState"] == "COMPLETED"


def test_requeued_job_resumes_from_its_checkpoint_to_identical_metrics(tmp_path, sweeps):
    steps = 1500
    run = ["method=dann", "seed=0", f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}",
           "checkpoint.every_n_steps=100", "probe.enabled=false", "deterministic=true", "resume=auto"]
    sw = tmp_path / "sweep"
    proc = sweeps(sw, *run)
    run_dir = sw / "0_dann_moons_s0"
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    wait_for(ckpt.exists, 240, "the job's first checkpoint", every=0.05)
    (jid,) = slurm_jobs(sw)
    out = run_slurm("scontrol", "requeue", jid)
    assert out.returncode == 0, out.stderr
    start_requeued_now(jid)
    # the same run, uninterrupted, in this process (while the requeued job runs on the cluster),
    # on one thread like the 1-CPU job (and not to fight it for the cores)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref = train(make_cfg(tmp_path / "ref", *RUN, *run))
    finally:
        torch.set_num_threads(threads)
    log = finish(proc, sw, 300)
    assert proc.returncode == 0, log[-4000:]
    rec = read_record(run_dir)
    assert rec["status"] == "finished" and rec["steps"] == steps
    assert rec["resumed_from"] == str(ckpt)  # the second attempt found the first one's folder
    assert job(jid)["Restarts"] == "1"
    logs = job_logs(sw, jid)
    cut = [int(s) for s in re.findall(r"dann on moons seed 0 interrupted at step (\d+)", logs)]
    assert len(cut) == 1 and 100 <= cut[0] < steps, logs[-3000:]  # stopped mid-run, after a checkpoint
    assert rec["metrics"] == ref["metrics"]  # bitwise: same seed, deterministic CPU


def seconds(slurm_time: str) -> int:
    """[D-]HH:MM:SS (or MM:SS) as seconds."""
    days, _, hms = slurm_time.rpartition("-")
    parts = [int(x) for x in hms.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    return int(days or 0) * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]


def test_job_at_its_time_limit_is_requeued_by_submitit_and_finishes(tmp_path, sweeps):
    """SLURM sends USR2 signal_delay_s before the time limit (up to 30 s earlier: slurmctld checks
    limits every 30 s); the run holds it to the end of its step and writes last.ckpt, submitit
    checkpoints its call and requeues the job (max_num_timeout times at most), and the requeued
    job resumes from that checkpoint (resume=auto).

    The run is given 75 s of training (trainer.max_time: a budget that survives the requeue and
    does not depend on this machine's speed). So that the signal cannot arrive while Python is
    still importing (submitit's handler is not installed yet: USR2 would kill the task), the job
    is submitted with 10 minutes and, once it trains, its limit is lowered so that the signal
    comes within 60 s (limits have a one-minute resolution); after the requeue the limit goes
    back to 10 minutes to let the second attempt finish."""
    delay = 30
    run = ["method=dann", "seed=0", "trainer.max_steps=1000000", "trainer.val_check_interval=1000000",
           "+trainer.max_time={seconds:75}", "checkpoint.every_n_steps=100", "probe.enabled=false", "resume=auto",
           f"hydra.launcher.signal_delay_s={delay}", "hydra.launcher.max_num_timeout=1"]
    sw = tmp_path / "sweep"
    proc = sweeps(sw, *run)
    run_dir = sw / "0_dann_moons_s0"
    wait_for((run_dir / "checkpoints" / "last.ckpt").exists, 240, "the job's first checkpoint", every=0.1)
    (jid,) = slurm_jobs(sw)
    ran = seconds(job(jid)["RunTime"])
    limit = -(-(ran + delay) // 60)  # minutes, rounded up: the limit comes in 30-90 s, the signal in 0-60 s
    out = run_slurm("scontrol", "update", f"JobId={jid}", f"TimeLimit={limit}")
    assert out.returncode == 0, out.stderr
    wait_for(lambda: job(jid)["Restarts"] == "1", 150, f"job {jid} requeued at its time limit", every=1)
    start_requeued_now(jid)
    out = run_slurm("scontrol", "update", f"JobId={jid}", "TimeLimit=10")
    assert out.returncode == 0, out.stderr
    log = finish(proc, sw, 300)
    assert proc.returncode == 0, log[-4000:]
    rec = read_record(run_dir)
    assert rec["status"] == "finished"
    assert rec["resumed_from"] == str(run_dir / "checkpoints" / "last.ckpt")
    logs = job_logs(sw, jid)
    assert "this job is timed-out" in logs and "(0 remaining timeouts)" in logs, logs[-3000:]
    cut = [int(s) for s in re.findall(r"dann on moons seed 0 interrupted at step (\d+)", logs)]
    assert len(cut) == 1 and 100 <= cut[0] < rec["steps"], logs[-3000:]
    assert "Time limit reached" in logs  # the 75 s of training, over both attempts
    info = job(jid)
    assert info["Restarts"] == "1" and info["JobState"] == "COMPLETED"


def test_two_task_ddp_under_srun_writes_one_record_equal_to_single_process_eval(tmp_path, sweeps):
    sw = tmp_path / "sweep"
    proc = sweeps(sw, "method=dann", "trainer=ddp", "trainer.devices=2", "hydra.launcher.tasks_per_node=2",
                  "data.batch_size=32", "trainer.max_steps=300", "trainer.val_check_interval=100")
    log = finish(proc, sw, 300)
    assert proc.returncode == 0, log[-4000:]
    (jid,) = slurm_jobs(sw)
    run_dir = sw / "0_dann_moons_s0"
    assert len(list(sw.rglob("results.json"))) == 1  # rank 0 writes the record, rank 1 none
    rec = read_record(run_dir)
    assert rec["status"] == "finished" and rec["steps"] == 300
    assert rec["config"]["trainer"]["strategy"] == "ddp" and rec["config"]["trainer"]["devices"] == 2
    # two SLURM tasks (srun), whose ranks Lightning took from SLURM_PROCID / SLURM_NTASKS
    assert job(jid)["NumTasks"] == "2"
    logs = job_logs(sw, jid)
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in logs and "GLOBAL_RANK: 1, MEMBER: 2/2" in logs, logs[-3000:]
    # the synced, sharded evaluation equals a single-process evaluation of the final weights
    assert_last_checkpoint_matches_record(run_dir, rec, make_cfg(tmp_path / "eval", *RUN, "trainer.max_steps=300"), 300)
