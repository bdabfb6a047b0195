"""Issue #33, hardening second pass: the three failures and the rules, one test (or one
parametrised group) each. Each was written first and failed on the code before its fix.

The rules: a run folder holds one run; a resume is the same run or nothing; a received file is
data; every refusal is one line (exit status 2) in every entry point; exit status tells the truth;
archives and label files stay in bounds; a full disk loses nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import make_cfg
from dann.errors import CheckpointError, ResumeError
from dann.run.train import train
from test_hardening import MOONS, SigtermAt, cli_env, copy_run, dann_train_cmd, record

ROOT = Path(__file__).resolve().parent.parent


def snapshot(folder: Path) -> dict[str, bytes | str]:
    """Every path under ``folder`` with its content (folders as "dir"): what "changes nothing" compares."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else "dir" for p in sorted(folder.rglob("*"))}


def changed(before: dict, after: dict) -> list[str]:
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished 60-step moons run evaluated at steps 20, 40, 60."""
    out = tmp_path_factory.mktemp("finished") / "run"
    train(make_cfg(out, *MOONS, "trainer.max_steps=60"))
    return out


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> Path:
    """A moons run stopped by SIGTERM at step 20: record `interrupted`, checkpoints/last.ckpt at step 20."""
    out = tmp_path_factory.mktemp("interrupted") / "run"
    with pytest.raises((SystemExit, KeyboardInterrupt)):
        train(make_cfg(out, *MOONS), callbacks=[SigtermAt(20)])
    assert record(out)["status"] == "interrupted"
    return out


def dann_train(run_dir: Path, *overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(dann_train_cmd(run_dir, *overrides), cwd=cwd, env=cli_env(), capture_output=True,
                          text=True, timeout=600)


def one_line_error(out: subprocess.CompletedProcess, prog: str, *needles: str) -> str:
    """Exit status 2, no traceback, exactly one ``<prog>: error: `` line holding every needle."""
    text = out.stderr + out.stdout
    assert out.returncode == 2, (out.returncode, text[-3000:])
    assert "Traceback" not in text, text[-3000:]
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith(f"{prog}: error: ")]
    assert len(lines) == 1, text[-3000:]
    for n in needles:
        assert n in out.stderr[out.stderr.find(f"{prog}: error: "):], (n, text[-3000:])
    return lines[0]


# == failure 1 and the rule "a run folder holds one run" =========================================
def test_a_new_run_in_a_folder_holding_a_run_is_refused_and_the_folder_is_left_as_it_was(finished, tmp_path):
    # what re-running a sweep with a fixed sweep dir did: a 40-step run in the folder of a 60-step
    # one appended to its evaluations.jsonl, and its record "selected" step 60 of the old run
    run = copy_run(finished, tmp_path / "run")
    before = snapshot(run)
    with pytest.raises(ResumeError) as e:
        train(make_cfg(run, *MOONS))
    msg = str(e.value)
    assert str(run) in msg and "resume=auto" in msg and "fresh folder" in msg, msg
    assert changed(before, snapshot(run)) == []


def test_cli_new_run_in_a_used_folder_is_one_line_and_leaves_hydra_files_alone(tmp_path):
    run = tmp_path / "run"
    first = dann_train(run, *MOONS, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert (run / ".hydra" / "config.yaml").is_file()  # still written, by dann-train now
    before = snapshot(run)
    second = dann_train(run, *MOONS, "optim.lr=0.1", cwd=tmp_path)
    one_line_error(second, "dann-train", "resume=auto", "fresh folder")
    assert changed(before, snapshot(run)) == []  # .hydra/ included: Hydra used to rewrite it first


def test_resume_auto_of_a_finished_run_leaves_it_untouched(finished, tmp_path):
    # re-running a sweep with resume=auto: the record's times used to be rewritten (and W&B got a
    # second run of the same seed)
    run = copy_run(finished, tmp_path / "run")
    before = snapshot(run)
    rec = train(make_cfg(run, *MOONS, "trainer.max_steps=60", "resume=auto"))
    assert rec["status"] == "finished" and rec["finished_at"] == record(run)["finished_at"]
    assert changed(before, snapshot(run)) == []


def test_resume_auto_of_a_finished_run_with_another_config_is_refused_by_name(finished, tmp_path):
    run = copy_run(finished, tmp_path / "run")
    before = snapshot(run)
    with pytest.raises(ResumeError, match=r"trainer\.max_steps: 60 \(finished run\) -> 80 \(now\)"):
        train(make_cfg(run, *MOONS, "trainer.max_steps=80", "resume=auto"))
    assert changed(before, snapshot(run)) == []


@pytest.mark.slow
def test_a_sweep_run_again_with_resume_auto_rewrites_no_record_and_starts_no_second_wandb_run(tmp_path):
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "dann.run.train", "-m", *MOONS, "seed=0", "logger=default",
           "trainer.enable_progress_bar=false", "trainer.accelerator=cpu", f"hydra.sweep.dir={sweep}", "resume=auto"]
    for attempt in range(2):
        out = subprocess.run(cmd, cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        (run,) = [p.parent for p in sweep.rglob("results.json")]
        if attempt == 0:
            before = snapshot(run)
            assert len(list((run / "wandb").glob("offline-run-*"))) == 1
    assert changed(before, snapshot(run)) == []  # one W&B run, the same record, the same .hydra/


def test_resume_auto_without_a_checkpoint_restarts_clean(tmp_path):
    # an attempt that failed before its first checkpoint left evaluations: the restart from step 0
    # must not append to them
    run = tmp_path / "run"
    with pytest.raises((SystemExit, KeyboardInterrupt)):
        train(make_cfg(run, *MOONS, "checkpoint.every_n_steps=1000"), callbacks=[SigtermAt(25)])
    (run / "checkpoints" / "last.ckpt").unlink()  # as if killed before the signal checkpoint
    old = (run / "evaluations.jsonl").read_text()
    rec = train(make_cfg(run, *MOONS, "checkpoint.every_n_steps=1000", "resume=auto"))
    assert rec["status"] == "finished" and rec["resumed_from"] is None
    steps = [json.loads(x)["step"] for x in (run / "evaluations.jsonl").read_text().splitlines()]
    assert steps == [20, 40]
    assert [p.read_text() for p in run.glob("evaluations.jsonl.restarted-*")] == [old]


# == failure 2 and the rule "a resume is the same run or nothing" ===================================
@pytest.mark.parametrize("first, then, shown", [
    ((), ("+trainer.gradient_clip_val=0.0001",), "trainer.gradient_clip_val: (absent) (checkpoint) -> 0.0001 (now)"),
    (("+trainer.gradient_clip_val=0.5",), (), "trainer.gradient_clip_val: 0.5 (checkpoint) -> (absent) (now)"),
], ids=["added", "removed"])
def test_a_resume_with_a_key_added_or_removed_is_refused_by_name(tmp_path, first, then, shown):
    run = tmp_path / "run"
    with pytest.raises((SystemExit, KeyboardInterrupt)):
        train(make_cfg(run, *MOONS, *first), callbacks=[SigtermAt(20)])
    before = snapshot(run)
    with pytest.raises(ResumeError) as e:
        train(make_cfg(run, *MOONS, *then, "resume=auto"))
    assert shown in str(e.value), str(e.value)
    assert changed(before, snapshot(run)) == []  # the record still says interrupted


def forget_key(run: Path, key: str) -> None:
    """Make ``run`` look written before ``key`` existed: drop it from its checkpoint's and record's configs."""
    group, name = key.split(".")
    ckpt = run / "checkpoints" / "last.ckpt"
    c = torch.load(ckpt, weights_only=True)
    del c["dann_config"][group][name]
    torch.save(c, ckpt)
    rec = record(run)
    del rec["config"][group][name]
    (run / "results.json").write_text(json.dumps(rec))


def test_a_checkpoint_older_than_a_default_key_resumes_at_its_default_and_is_refused_at_another(interrupted,
                                                                                               tmp_path):
    run = copy_run(interrupted, tmp_path / "run")
    forget_key(run, "data.mean_of")  # added to conf/train.yaml after such runs, default `pooled`
    with pytest.raises(ResumeError, match=r"data\.mean_of: \(absent\) \(checkpoint\) -> source \(now\)"):
        train(make_cfg(run, *MOONS, "data.mean_of=source", "resume=auto"))
    rec = train(make_cfg(run, *MOONS, "resume=auto"))
    assert rec["status"] == "finished" and rec["steps"] == 40 and rec["resumed_from"].endswith("last.ckpt")


# == failure 3: a truncated checkpoint ==============================================================
def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # torch.load: OSError "Invalid argument"


def test_a_truncated_checkpoint_is_a_clear_refusal_and_writes_no_record(interrupted, tmp_path):
    run = copy_run(interrupted, tmp_path / "run")
    truncate(run / "checkpoints" / "last.ckpt")
    before = snapshot(run)
    with pytest.raises(CheckpointError, match=r"last\.ckpt cannot be read .*truncated"):
        train(make_cfg(run, *MOONS, "resume=auto"))
    assert changed(before, snapshot(run)) == []  # still `interrupted`


def test_resume_auto_never_turns_a_finished_record_into_failed(finished, tmp_path):
    run = copy_run(finished, tmp_path / "run")
    truncate(run / "checkpoints" / "last.ckpt")
    before = snapshot(run)
    assert train(make_cfg(run, *MOONS, "trainer.max_steps=60", "resume=auto"))["status"] == "finished"
    assert changed(before, snapshot(run)) == []


def test_cli_truncated_checkpoint_is_one_line(interrupted, tmp_path):
    run = copy_run(interrupted, tmp_path / "run")
    truncate(run / "checkpoints" / "last.ckpt")
    out = dann_train(run, *MOONS, "resume=auto", cwd=tmp_path)
    one_line_error(out, "dann-train", "last.ckpt cannot be read", "truncated")
    assert record(run)["status"] == "interrupted"


# == the rule "exit status tells the truth" ==========================================================
def test_cli_run_stopped_by_sigterm_exits_non_zero(tmp_path):
    # Lightning's SIGTERMException is a SystemExit without a code: `dann-train ... && next` went on
    import signal
    import time

    run = tmp_path / "run"
    long = ["pair=moons", "trainer.max_steps=10000000", "trainer.val_check_interval=10000000",
            "checkpoint.every_n_steps=10000000", "probe.enabled=false"]
    p = subprocess.Popen(["sh", "-c", " ".join(map(str, dann_train_cmd(run, *long))) + " && touch next_step"],
                         cwd=tmp_path, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (run / "metrics.csv").exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    assert p.poll() is None, p.stderr.read()[-3000:]
    subprocess.run(["pkill", "-TERM", "-P", str(p.pid)], check=True)  # the python under this one sh
    p.wait(300)
    assert p.returncode == 143, (p.returncode, p.stderr.read()[-3000:])  # 128 + SIGTERM, as a shell reports it
    assert not (tmp_path / "next_step").exists()
    assert record(run)["status"] == "interrupted"


def test_a_diverged_run_is_flagged_in_its_record_and_not_averaged_by_the_table(tmp_path, capsys):
    from dann.report.cli import main as dann_table

    short = ["pair=moons", "trainer.max_steps=50", "trainer.val_check_interval=50", "probe.enabled=false",
             "trainer.log_every_n_steps=10"]
    bad = train(make_cfg(tmp_path / "bad", *short, "optim.lr=1e20"))  # losses ~1e20, finite: no NaN to stop at
    assert bad["status"] == "finished" and bad["diverged_at_step"] == 10, bad.get("diverged_at_step")
    assert record(tmp_path / "bad")["diverged_at_step"] == 10
    ok = train(make_cfg(tmp_path / "ok", *short))
    assert ok["diverged_at_step"] is None
    assert dann_table([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"{ok['metrics']['test/tgt_acc']:.4f}"[1:] + " ± — (1)" in out  # the cell holds the healthy run only
    assert "diverged (not averaged" in out and f"{tmp_path / 'bad' / 'results.json'}: from step 10" in out
