"""A run folder's checkpoint is the record's model (issue: last.ckpt was an earlier step's)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_cfg
from dann.run.checkpoints import load_checkpoint
from dann.run.train import train

ROOT = Path(__file__).resolve().parent.parent


def _evaluate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "evaluate.py"), *args], capture_output=True,
                          text=True)


@pytest.fixture(scope="module")
def run_30(tmp_path_factory):
    """30 steps with a checkpoint every 20: the last step is not a checkpoint step."""
    out = tmp_path_factory.mktemp("run") / "r"
    rec = train(make_cfg(out, "pair=moons", "method=dann", "trainer.max_steps=30", "trainer.val_check_interval=10",
                         "checkpoint.every_n_steps=20", "checkpoint.keep_all=true"))
    return out, rec


def test_the_final_weights_are_in_the_run_folder_whatever_the_interval(run_30):
    out, rec = run_30
    assert rec["steps"] == 30
    assert load_checkpoint(out / "checkpoints" / "last.ckpt")["global_step"] == 30
    # kept checkpoints end at the final step too, so a rescore sees the model the record reports
    assert sorted(p.name for p in (out / "checkpoints").glob("step=*.ckpt")) == ["step=000020.ckpt",
                                                                                 "step=000030.ckpt"]


def test_evaluate_reproduces_the_recorded_target_accuracy_exactly(run_30):
    out, rec = run_30
    p = _evaluate(str(out), "--domain", "moons_rot35")
    assert p.returncode == 0, p.stderr
    row = p.stdout.strip().splitlines()[-1]
    recorded, measured = row.split("|")[5].strip(), row.split("|")[6].split("(")[0].strip()
    assert recorded == measured == f"{rec['metrics']['test/tgt_acc']:.4f}"


def test_a_checkpoint_of_another_step_than_the_record_is_refused(run_30, tmp_path):
    out, _ = run_30
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    shutil.copy(copy / "checkpoints" / "step=000020.ckpt", copy / "checkpoints" / "last.ckpt")
    p = _evaluate(str(copy), "--domain", "moons_rot35")
    assert p.returncode == 2
    assert "step 20" in p.stderr and "step 30" in p.stderr and len(p.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("steps, interval, evals", [(15000, 1000, 15), (1500, 100, 15), (2000, 134, 15),
                                                    (300, 50, 6), (40, 50, 1)])
def test_the_default_evaluation_interval_follows_the_run_length(steps, interval, evals):
    from dann.config import evaluation_interval

    assert evaluation_interval("auto", steps) == interval
    assert len(range(interval, steps + 1, interval)) + (steps % interval != 0) == evals
    assert evaluation_interval(700, steps) == 700


def test_a_short_image_run_gets_a_curve_by_default(tmp_path):
    """The tutorial's length on an image-sized net gets evaluations to draw and choose from."""
    out = tmp_path / "r"
    cfg = make_cfg(out, "pair=moons", "trainer.max_steps=300", "trainer.val_check_interval=auto")
    rec = train(cfg)
    rows = [json.loads(x) for x in (out / "evaluations.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [50, 100, 150, 200, 250, 300]
    assert rec["config"]["trainer"]["val_check_interval"] == 50


def test_train_log_tells_how_far_a_background_run_got(tmp_path):
    """Without the progress display (a background run), train.log still has a line per evaluation."""
    out = tmp_path / "r"
    train(make_cfg(out, "pair=moons", "trainer.max_steps=40", "trainer.val_check_interval=10",
                   "trainer.enable_progress_bar=false"))
    lines = (out / "train.log").read_text().splitlines()
    assert lines[0].startswith("training: 40 steps")
    assert [ln.split(":")[0] for ln in lines if "evaluated" in ln] == [f"step {s}/40" for s in (10, 20, 30, 40)]
    assert "tgt_acc" in lines[-2] and lines[-1].startswith("step 40/40") and "40 steps in" in lines[-1]


def test_a_misspelt_key_on_the_command_line_is_one_line(tmp_path):
    p = subprocess.run([sys.executable, "-m", "dann.run.train", "pair=moons", "optim.lrr=0.1"], capture_output=True,
                       text=True, cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.startswith("dann-train: error: unknown key(s) optim.lrr")
    assert len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "outputs").exists()  # nothing was composed into a run folder


def test_rescore_takes_a_sweep_folder_as_the_shell_expands_it(tmp_path):
    """`dann-select rescore sweep/*` passes multirun.yaml and summary.md too: files are skipped,
    folders are searched for runs, as dann-table does."""
    from dann.run.rescore import main

    sweep = tmp_path / "sweep"
    train(make_cfg(sweep / "0_dann_moons_s0", "pair=moons", "trainer.max_steps=20", "trainer.val_check_interval=10",
                   "checkpoint.every_n_steps=10", "checkpoint.keep_all=true"))
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    (sweep / "summary.md").write_text("| table |\n")
    assert main(["rescore", *map(str, sorted(sweep.iterdir())), "--samples", "50"]) == 0
    assert main(["rescore", str(sweep), "--samples", "50"]) == 0
    assert main(["rescore", str(tmp_path / "nothing")]) == 2


def test_a_score_the_evaluations_predate_names_rescore_as_the_fix():
    from dann.selection import select

    old = [{"step": 10, "tgt_acc": 0.5, "src_val_acc": 0.9}, {"step": 20, "tgt_acc": 0.6, "src_val_acc": 0.8}]
    with pytest.raises(ValueError, match="dann-select rescore"):
        select(old, "mixval")
    with pytest.raises(ValueError, match="data.src_val"):
        select([{"step": 10, "tgt_acc": 0.5, "src_val_acc": float("nan")}], "src_val")
