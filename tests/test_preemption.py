"""The job manager's time-limit/pre-emption signal (submitit's USR2 under hydra/launcher=slurm)
is held until the step ends: ``last.ckpt`` of that step first, then the manager's own handler.
Without a cluster: a real USR2 to this process, with a handler that does what submitit's does
(requeue, then ``sys.exit(-1)``). On a real cluster: tests/test_slurm.py (time limit)."""

import json
import signal
import subprocess

import pytest
import torch

from conftest import make_cfg
from dann.run.train import train
from test_reliability import SHORT, SendSignalAt


def test_preemption_signal_is_held_to_the_step_end_then_handed_to_the_job_manager(tmp_path):
    seen = []

    def job_manager(signum, frame):  # submitit: checkpoint its call, `scontrol requeue`, sys.exit(-1)
        seen.append(torch.load(tmp_path / "cut" / "checkpoints" / "last.ckpt", weights_only=False)["global_step"])
        # the requeue signals every process of the job, the `scontrol requeue` child too: it must survive
        subprocess.check_call(["sh", "-c", "kill -TERM $$; exit 0"])
        raise SystemExit(-1)

    full = train(make_cfg(tmp_path / "full", *SHORT))
    old = signal.signal(signal.SIGUSR2, job_manager)
    try:
        with pytest.raises(SystemExit):
            train(make_cfg(tmp_path / "cut", *SHORT), callbacks=[SendSignalAt(70, signal.SIGUSR2)])
    finally:
        signal.signal(signal.SIGUSR2, old)
    assert seen == [70]  # the manager ran once, after the checkpoint of step 70 (not the periodic one of 50)
    rec = json.loads((tmp_path / "cut" / "results.json").read_text())
    assert rec["status"] == "interrupted" and rec["steps"] == 70, rec
    resumed = train(make_cfg(tmp_path / "cut", *SHORT, "resume=auto"))
    assert resumed["steps"] == 200 and resumed["resumed_from"].endswith("last.ckpt")
    assert resumed["metrics"] == full["metrics"]  # bitwise: same seed, deterministic CPU


def test_without_a_manager_handler_usr2_is_left_alone(tmp_path):
    # no Python handler for USR2 (not under submitit): the callback installs none either
    assert signal.getsignal(signal.SIGUSR2) in (signal.SIG_DFL, None)
    rec = train(make_cfg(tmp_path / "run", *SHORT, "trainer.max_steps=20", "trainer.val_check_interval=20"))
    assert rec["status"] == "finished"
    assert signal.getsignal(signal.SIGUSR2) in (signal.SIG_DFL, None)
