"""Fault injection on CPU: SIGTERM/SIGINT and resume, a NaN loss, bad configs, truncated records."""

import json
import os
import signal

import pytest
import pytorch_lightning as pl
import torch
from hydra.errors import ConfigCompositionException, MissingConfigException

from conftest import make_cfg
from dann.run.callbacks import CollapseWatch
from dann.errors import ConfigError
from dann.methods.dann import DANN
from dann.records import read_records
from dann.run.train import train

SHORT = ["method=dann", "trainer.max_steps=200", "trainer.val_check_interval=100", "checkpoint.every_n_steps=50",
         "trainer.log_every_n_steps=10", "logger=csv", "deterministic=true"]


class SendSignalAt(pl.Callback):
    """Deliver a real signal to this process after step ``k`` (what `kill`/Ctrl-C/SLURM do)."""

    def __init__(self, k: int, sig: int):
        self.k, self.sig = k, sig

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.k:
            os.kill(os.getpid(), self.sig)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_interrupt_then_resume_equals_uninterrupted(tmp_path, sig):
    full = train(make_cfg(tmp_path / "full", *SHORT))
    cut = make_cfg(tmp_path / "cut", *SHORT)
    with pytest.raises((SystemExit, KeyboardInterrupt)):
        train(cut, callbacks=[SendSignalAt(70, sig)])
    rec = json.loads((tmp_path / "cut" / "results.json").read_text())
    assert rec["status"] == "interrupted" and rec["steps"] == 70, rec
    ckpt = torch.load(tmp_path / "cut" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 70
    resumed = train(make_cfg(tmp_path / "cut", *SHORT, "resume=auto"))
    assert resumed["resumed_from"].endswith("last.ckpt")
    assert resumed["steps"] == 200
    assert resumed["metrics"] == full["metrics"]  # bitwise: same seed, deterministic CPU
    # evaluations at the same steps with the same scores (Ctrl-C mid-step must not shift them)
    from dann.selection import read_evaluations

    assert read_evaluations(tmp_path / "cut") == read_evaluations(tmp_path / "full")
    # the learning curve of the first attempt is kept, in step order, without repeated steps
    import csv

    steps = [int(r["step"]) for r in csv.DictReader((tmp_path / "cut" / "metrics.csv").open()) if r["train/loss"]]
    assert steps == sorted(steps) and len(steps) == len(set(steps)) and steps[0] == 9 and steps[-1] > 100


def test_nan_loss_stops_run_names_step_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    original = DANN.losses

    def losses_with_nan_at_120(self, batch):
        terms = original(self, batch)
        if self.global_step == 120:
            terms["cls"] = terms["cls"] * float("nan")
        return terms

    monkeypatch.setattr(DANN, "losses", losses_with_nan_at_120)
    with pytest.raises(Exception, match=r"non-finite loss at step 120: loss=nan, cls=nan, dom=0\.\d+"):
        train(make_cfg(tmp_path / "run", *SHORT))
    rec = json.loads((tmp_path / "run" / "results.json").read_text())
    assert rec["status"] == "failed" and "NonFiniteLossError" in rec["error"] and rec["metrics"] == {}
    ckpt = torch.load(rec["last_checkpoint"], weights_only=False)
    assert ckpt["global_step"] == 100  # the last checkpoint step before 120
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())
    good, bad = read_records(tmp_path)
    assert [r["status"] for r in good] == ["failed"] and not bad


@pytest.mark.parametrize("override, key", [
    ("optim.lr=-0.1", "optim.lr"),
    ("data.batch_size=63", "data.batch_size"),
    ("trainer.max_steps=0", "trainer.max_steps"),
    ("data.mean_of=target", "data.mean_of"),
    ("+optim.lerning_rate=0.1", "optim.lerning_rate"),
    ("pair.source=mnits", "pair.source"),
    ("method.name=dan", "method.name"),
])
def test_bad_config_error_names_key(tmp_path, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as e:
        train(make_cfg(tmp_path, override))
    assert not (tmp_path / "results.json").exists()
    assert "allowed" in str(e.value) or "expected" in str(e.value) or "known" in str(e.value)


@pytest.mark.parametrize("override", ["pair=mnist_mnistmm", "method=dnn"])
def test_unknown_pair_or_method_file_lists_options(tmp_path, override):
    with pytest.raises((MissingConfigException, ConfigCompositionException)) as e:
        make_cfg(tmp_path, override)
    group = override.split("=")[0]
    assert f"'{group}/" in str(e.value) or group in str(e.value)
    assert "Available options" in str(e.value)


def test_truncated_record_is_reported_not_read(tmp_path):
    train(make_cfg(tmp_path / "ok", "trainer.max_steps=20", "trainer.val_check_interval=20"))
    text = (tmp_path / "ok" / "results.json").read_text()
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "results.json").write_text(text[: len(text) // 2])
    good, bad = read_records(tmp_path)
    assert len(good) == 1 and len(bad) == 1 and bad[0][0].parent.name == "cut"


class KillFeaturesAt(pl.Callback):
    """At step ``k`` saturate every hidden unit of the (two-moons) feature layer: the classifier
    is left with a constant input, as after the loss spike of a diverged DANN run."""

    def __init__(self, k: int):
        self.k = k

    def on_train_batch_end(self, trainer, module, *args):
        if trainer.global_step == self.k:
            with torch.no_grad():
                lin = module.features[1]
                lin.weight.zero_()
                lin.bias.fill_(-100.0)  # sigmoid(-100): 0, and no gradient to bring it back


def test_collapse_to_chance_is_flagged_in_the_record(tmp_path, caplog):
    ok = train(make_cfg(tmp_path / "ok", *SHORT))
    assert ok["collapsed_at_step"] is None and ok["status"] == "finished"
    with caplog.at_level("WARNING", logger="dann.run.callbacks"):
        bad = train(make_cfg(tmp_path / "bad", *SHORT), callbacks=[KillFeaturesAt(120)])
    assert bad["status"] == "finished" and 120 < bad["collapsed_at_step"] <= 200, bad["collapsed_at_step"]
    assert bad["metrics"]["test/src_acc"] < 0.75  # chance is .5: the flag is about a real collapse
    assert f"collapsed to chance at step {bad['collapsed_at_step']}" in caplog.text
    assert json.loads((tmp_path / "bad" / "results.json").read_text())["collapsed_at_step"] == bad["collapsed_at_step"]


def watch_over(losses, **kw):
    """CollapseWatch fed one logged label loss per 50 steps (10 classes: ln K = 2.303)."""
    w = CollapseWatch(10, **kw)
    for i, v in enumerate(losses):
        w.observe(50 * (i + 1), v)
    return w


def test_a_spike_that_training_recovers_from_is_not_a_collapse():
    # the 28 px DANN seed 1 run: 4.41 once at step 5,200 (here: step 250), learnt again 50 steps later
    w = watch_over([2.3, 0.5, 0.1, 0.05, 4.41, 0.22, 0.09, 3.0, 2.9, 0.1])
    w.finish(0.1)
    assert w.collapsed_at_step is None


def test_a_loss_that_stays_at_chance_is_a_collapse_from_its_first_step():
    w = watch_over([2.3, 0.5, 0.05, 0.04, 2.30, 2.31, 2.30, 2.30, 2.30, 2.30])
    assert w.collapsed_at_step == 250
    late = watch_over([2.3, 0.1, 0.05, 2.30, 2.31])  # still at chance when training ends: flagged there
    assert late.collapsed_at_step is None
    late.finish(2.31)
    assert late.collapsed_at_step == 200
    never_learnt = watch_over([2.3] * 10)  # at chance from the start: untrained, not collapsed
    never_learnt.finish(2.3)
    assert never_learnt.collapsed_at_step is None


def test_collapse_watch_state_survives_a_resume():
    w = watch_over([0.1, 2.3, 2.3])
    resumed = CollapseWatch(10)
    resumed.load_state_dict(w.state_dict())
    for step in (200, 250, 300):
        resumed.observe(step, 2.3)
    assert resumed.collapsed_at_step == 100
