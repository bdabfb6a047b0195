"""A real 2-process DDP run (gloo on CPU): one record, synced metrics, agreement with 1 process."""

import json
import os
import subprocess
import sys

import pytest

from conftest import assert_last_checkpoint_matches_record, make_cfg

RUN = ["pair=moons", "method=dann", "trainer.accelerator=cpu", "trainer.max_steps=300",
       "trainer.val_check_interval=100", "trainer.enable_progress_bar=false", "logger=csv"]


def dann_train(run_dir, *overrides):
    env = dict(os.environ, WANDB_MODE="offline")
    out = subprocess.run([sys.executable, "-m", "dann.run.train", *RUN, f"hydra.run.dir={run_dir}", *overrides],
                         env=env, capture_output=True, text=True, timeout=300, cwd=run_dir.parent)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads((run_dir / "results.json").read_text()), out


@pytest.mark.slow
def test_two_process_ddp_run(tmp_path):
    rec, out = dann_train(tmp_path / "ddp", "trainer=ddp", "trainer.devices=2", "data.batch_size=32")
    assert rec["status"] == "finished" and rec["steps"] == 300
    assert rec["config"]["trainer"]["strategy"] == "ddp" and rec["config"]["trainer"]["devices"] == 2
    # The record is written once, by rank zero (rank 1 logs to its own file, writes no record).
    assert len(list(tmp_path.rglob("results.json"))) == 1
    assert out.stdout.count("dann on moons seed 0: src") == 1

    # Evaluation is sharded across the two ranks and synced by torchmetrics: the reported
    # accuracy must equal a single-process evaluation of the final weights, exactly.
    assert_last_checkpoint_matches_record(tmp_path / "ddp", rec, make_cfg(tmp_path / "eval", *RUN), 300)

    # Same total batch in one process (64 = 32 + 32 per step; DDP: 2 ranks x (16 + 16)).
    # The two runs see different batch compositions, so they agree only up to run-to-run
    # variation: over seeds 0-3 DANN's moons target accuracy spread by 0.05 at full length
    # and more at 300 steps; we allow 0.10 on target and 0.03 on source accuracy.
    single, _ = dann_train(tmp_path / "single", "data.batch_size=64")
    assert abs(single["metrics"]["test/src_acc"] - rec["metrics"]["test/src_acc"]) < 0.03
    assert abs(single["metrics"]["test/tgt_acc"] - rec["metrics"]["test/tgt_acc"]) < 0.10
