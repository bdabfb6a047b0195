"""A newcomer's first hour (issue #22): one progress display whatever extras are installed, no
library chatter, an evaluation at the end of every run and its folder printed, a quiet and honest
dann-bench, and a `dann-train --help` that says what the program is."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from conftest import make_cfg
from dann import bench
from dann.run.progress import StepProgress, clock
from dann.run.quiet import quiet_libraries, single_device
from dann.run.train import train
from dann.selection import read_evaluations

ROOT = Path(__file__).resolve().parent.parent

#: what a run printed before, on every run (issue #22, item 3), and Lightning's own bars
CHATTER = ("GPU available", "TPU available", "litlogger", "anonymous setting", "exists and is not empty",
           "LeafSpec", "`Trainer.fit` stopped", "srun", "Epoch", "it/s", "v_num", "Testing", "Validation")


def _env() -> dict[str, str]:
    """This tree's code in the child (whatever dann is installed), W&B offline as a new user has it."""
    env = dict(os.environ, WANDB_MODE="offline", COLUMNS="200")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def _run_cmd(run_dir: Path, steps: int) -> list[str]:
    # the default logger (CSV + W&B offline): the one whose chatter a newcomer saw
    return [sys.executable, "-m", "dann.run.train", "pair=moons", f"trainer.max_steps={steps}",
            "trainer.val_check_interval=500", f"hydra.run.dir={run_dir}"]


# -- item 2, 3, 4: a 300-step run to a pipe, as to a log file --------------------------------

@pytest.mark.slow
def test_run_to_a_file_prints_plain_progress_no_chatter_and_its_folder(tmp_path):
    run_dir = tmp_path / "run"
    p = subprocess.run(_run_cmd(run_dir, 300), cwd=tmp_path, env=_env(), capture_output=True, text=True,
                       timeout=600)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-3000:]
    # item 2: plain lines, a bounded number of them (a tenth of the run at most, or every 30 s)
    assert "\r" not in out and "\x1b" not in out, out[:2000]
    steps = [ln for ln in out.splitlines() if ln.startswith("step ")]
    assert 3 <= len(steps) <= 14, out
    assert any("steps/s ETA" in ln for ln in steps), steps
    assert steps[-1].startswith("step 300/300 (100%)") and "300 steps in" in steps[-1], steps
    assert len(out) < 5000, out
    # item 3: none of the library chatter
    assert not [c for c in CHATTER if c in out], out
    # item 4: an evaluation at the last step although val_check_interval (500) > max_steps, and the folder
    assert [e["step"] for e in read_evaluations(run_dir)] == [300]
    assert any(ln.startswith("step 300/300: evaluated, src_acc") for ln in steps), steps
    assert f"Run folder: {run_dir.resolve()}" in out


@pytest.mark.slow
def test_run_in_a_terminal_draws_one_bar_in_steps(tmp_path):
    """Under a pseudo-terminal: one line redrawn with \\r, steps/s and ETA, no epoch counter."""
    import pty

    master, slave = pty.openpty()
    p = subprocess.Popen(_run_cmd(tmp_path / "run", 200), cwd=tmp_path, env=_env(), stdin=slave, stdout=slave,
                         stderr=slave, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert p.wait(timeout=600) == 0
    out = b"".join(chunks).decode(errors="replace")
    assert "\r\x1b[Kstep " in out and "steps/s ETA " in out, out[-2000:]
    assert "step 200/200 (100%)" in out and "Run folder: " in out, out[-2000:]
    assert not [c for c in CHATTER if c in out], out[-3000:]
    # no line of its own per redraw: the output has few newlines
    assert out.count("\n") < 15, out[-3000:]


@pytest.mark.slow
def test_periodic_checkpoints_of_a_manual_optimization_method_are_quiet(tmp_path):
    """MCD and ADDA step their optimizers themselves: Lightning then printed a 14-line example at
    every periodic checkpoint, although a checkpoint after the step is the one resume needs."""
    p = subprocess.run([sys.executable, "-m", "dann.run.train", "pair=moons", "method=mcd", "trainer.max_steps=40",
                        "trainer.val_check_interval=40", "checkpoint.every_n_steps=20", "checkpoint.keep_all=true",
                        "logger=csv",
                        f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, env=_env(), capture_output=True,
                       text=True, timeout=600)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-3000:]
    assert "manual optimization" not in out and "saved_models" not in out, out[-3000:]
    assert (tmp_path / "run" / "checkpoints" / "step=000020.ckpt").exists()


# -- item 2: the display itself, on a fake trainer -------------------------------------------

def _trainer(step: int = 0, max_steps: int = 1000, **metrics):
    return SimpleNamespace(global_step=step, max_steps=max_steps, sanity_checking=False,
                           callback_metrics=metrics)


def test_line_mode_writes_every_n_steps_or_every_m_seconds(monkeypatch):
    import io

    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    buf = io.StringIO()
    bar = StepProgress(stream=buf, every_steps=100, every_s=30.0)
    t = _trainer()
    bar.on_train_start(t, None)
    for s in range(1, 1001):
        t.global_step, now[0] = s, now[0] + (0.01 if s < 500 else 1.0)  # slow after step 500
        bar.on_train_batch_end(t, None, None, None, s - 1)
    bar.on_train_end(t, None)
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("training: 1000 steps") and lines[-1].startswith("step 1000/1000 (100%)")
    steps = [int(ln.split()[1].split("/")[0]) for ln in lines[1:-1]]
    # every 100 steps while fast, every 30 s (30 steps) once slow
    assert steps[:5] == [100, 200, 300, 400, 500] and steps[5:8] == [530, 560, 590], steps
    assert "ETA" in lines[1] and "\r" not in buf.getvalue()


def test_tty_mode_redraws_one_line_and_keeps_evaluations(monkeypatch):
    import io

    now = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    buf = io.StringIO()
    bar = StepProgress(stream=buf, tty=True, redraw_s=0.0)
    t = _trainer(max_steps=15000)
    bar.on_train_start(t, None)
    now[0], t.global_step = 60.0, 1200
    t.callback_metrics["train/loss"] = 0.512
    bar.on_train_batch_end(t, None, None, None, 1199)
    assert buf.getvalue().endswith("\r\x1b[Kstep 1200/15000 (8%) 20.0 steps/s ETA 11:30 loss 0.512")
    bar.on_validation_start(t, None)
    t.callback_metrics.update({"val/src_acc": 0.9, "val/tgt_acc": 0.7})
    bar.on_validation_end(t, None)
    assert buf.getvalue().endswith("\r\x1b[Kstep 1200/15000: evaluated, src_acc 0.9000, tgt_acc 0.7000\n")
    assert "\n" not in buf.getvalue()[:-1]  # nothing but the evaluation ended a line


def test_clock():
    assert (clock(0), clock(648), clock(3725)) == ("0:00", "10:48", "1:02:05")


def test_no_progress_when_the_bar_is_disabled(tmp_path):
    from dann.run.callbacks import build_callbacks

    cfg = make_cfg(tmp_path, "trainer.enable_progress_bar=false")
    assert not any(isinstance(c, StepProgress) for c in build_callbacks(cfg, tmp_path, tmp_path / "c", 2)[0])
    cfg = make_cfg(tmp_path, "trainer.enable_progress_bar=true")
    assert sum(isinstance(c, StepProgress) for c in build_callbacks(cfg, tmp_path, tmp_path / "c", 2)[0]) == 1


# -- item 3: chatter goes, real warnings stay -------------------------------------------------

def test_chatter_is_dropped_and_real_warnings_stay():
    from pytorch_lightning.utilities.rank_zero import rank_zero_warn

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_libraries(single_device=True)
        rank_zero_warn("Experiment logs directory /x/ exists and is not empty. Previous log files in this "
                       "directory will be deleted when the new ones are saved!")
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec)`",
                      FutureWarning)
        rank_zero_warn("The `srun` command is available on your system but is not used. HINT: ...")
        rank_zero_warn("The dataloader does not have many workers which may be a bottleneck.")
        warnings.warn("`foo` is deprecated, use `bar`", FutureWarning)
    assert [str(w.message) for w in caught] == ["The dataloader does not have many workers which may be a bottleneck.",
                                                "`foo` is deprecated, use `bar`"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_libraries(single_device=False)  # a DDP run: the srun hint is real advice there
        rank_zero_warn("The `srun` command is available on your system but is not used. HINT: ...")
    assert len(caught) == 1


def test_lightning_info_chatter_is_dropped_and_other_info_stays():
    from pytorch_lightning.utilities.rank_zero import rank_zero_info

    quiet_libraries()
    got: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda r: got.append(r.getMessage())
    names = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero")
    for n in names:
        logging.getLogger(n).addHandler(handler)
    try:
        for msg in ("GPU available: False, used: False", "TPU available: False, using: 0 TPU cores",
                    "💡 Tip: For seamless cloud logging, try installing [litlogger](https://pypi.org/project/litlogger/)",
                    "`Trainer.fit` stopped: `max_steps=300` reached.", "Restoring states from the checkpoint path"):
            rank_zero_info(msg)
    finally:
        for n in names:
            logging.getLogger(n).removeHandler(handler)
    assert got == ["Restoring states from the checkpoint path"]


@pytest.mark.parametrize("devices, nodes, one", [(1, 1, True), ([0], 1, True), ("auto", 1, False), (2, 1, False),
                                                 (1, 2, False)])
def test_single_device(devices, nodes, one):
    assert single_device(OmegaConf.create({"devices": devices, "num_nodes": nodes})) is one


def test_wandb_is_not_passed_the_anonymous_setting(tmp_path):
    from dann.run.loggers import build_loggers

    cfg = make_cfg(tmp_path, "logger=default")
    (wl,) = [lg for lg in build_loggers(cfg, tmp_path) if type(lg).__name__ == "WandbLogger"]
    assert "anonymous" not in wl._wandb_init


# -- item 4: an evaluation at the last step, the same steps as before otherwise ---------------

@pytest.mark.parametrize("steps, every, expected", [(40, 20, [20, 40]), (50, 20, [20, 40, 50]), (30, 500, [30])])
def test_the_last_step_is_always_evaluated(tmp_path, steps, every, expected):
    train(make_cfg(tmp_path / "run", "pair=moons", f"trainer.max_steps={steps}",
                   f"trainer.val_check_interval={every}", "logger=csv"))
    assert [e["step"] for e in read_evaluations(tmp_path / "run")] == expected


# -- item 6: dann-bench --------------------------------------------------------------------

def test_load_warning_only_above_the_core_count():
    assert bench.load_warning(1.9, 2) is None and bench.load_warning(2.0, 2) is None
    w = bench.load_warning(9.1, 2)
    assert "load average 9.1 on 2 cores" in w and "not meaningful" in w


def _fake_worker(monkeypatch):
    """Each loop's process answers at once with made-up numbers (what is tested is the CLI around them)."""
    row = {"ms_per_step": 10.0, "images_per_s": 6400.0, "peak_mb": 100.0, "sys_ms_per_step": 0.1,
           "faults_per_step": 1.0, "synthetic_data": True}

    def run(cmd, **kw):
        mode = cmd[cmd.index("--_worker") + 1]
        return subprocess.CompletedProcess(cmd, 0, "BENCH_JSON " + json.dumps({"d": 0.1} if mode == "load" else row), "")

    monkeypatch.setattr(bench.subprocess, "run", run)


@pytest.mark.parametrize("load, warned", [((9.1, 2), True), ((0.3, 2), False)])
def test_bench_shows_progress_writes_no_json_unasked_and_warns_when_busy(tmp_path, monkeypatch, capsys, load, warned):
    _fake_worker(monkeypatch)
    monkeypatch.setattr(bench, "_machine_load", lambda: load)
    monkeypatch.chdir(tmp_path)
    assert bench.cli(["--pairs", "mnist_mnistm", "--synthetic"]) == 0
    out, err = capsys.readouterr()
    assert list(tmp_path.iterdir()) == [] and "JSON:" not in out  # no --out: no file
    for mode in ("framework", "dataloader", "floor", "load"):
        assert f"[bench] mnist_mnistm: {mode} ..." in err
    assert "[bench] mnist_mnistm: framework 10.0 ms/step" in err
    assert ("machine is busy" in err and "machine is busy" in out) is warned
    assert bench.cli(["--pairs", "mnist_mnistm", "--synthetic", "--out", "b.json"]) == 0
    res = json.loads((tmp_path / "b.json").read_text())
    assert res["load_average_at_start"] == load[0] and res["cores"] == load[1]


# -- item 7: dann-train --help ---------------------------------------------------------------

def test_help_names_the_program_and_its_groups(tmp_path):
    p = subprocess.run([sys.executable, "-m", "dann.run.train", "--help"], cwd=tmp_path, env=_env(),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    out = p.stdout
    assert out.startswith("dann-train: ") and "powered by Hydra" not in out
    lines = out.splitlines()
    for group in ("pair", "method", "model", "trainer", "logger", "experiment", "hparams_search", "+domains",
                  "hydra/launcher"):
        (desc,) = [ln for ln in lines if ln.startswith(f"  {group} ")]  # one line each, with a description
        assert len(desc.split()) > 3, desc
    # the options come from conf/: every method file is listed
    methods = sorted(p.stem for p in (ROOT / "conf" / "method").glob("*.yaml"))
    assert f"method: {', '.join(methods)}" in out


def test_the_readme_lists_every_method_with_its_config():
    """The README's first table is where a newcomer learns what `method=` can be: it names every
    method yaml in conf/method/ (a method added without its row would stay unknown to them)."""
    readme = (ROOT / "README.md").read_text()
    table = readme.split("| method | what it trains on | config |", 1)[1].split("\n\n", 1)[0]
    named = {n.strip(" `") for row in table.splitlines()[2:] for n in row.split("|")[1].split(",")}
    methods = {p.stem for p in (ROOT / "conf" / "method").glob("*.yaml")}
    assert named == methods, f"README table: {sorted(named)}; conf/method: {sorted(methods)}"
