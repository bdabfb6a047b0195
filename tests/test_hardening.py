"""Issue #21, hardening: one test (or one parametrised group) per numbered case.

Each was written first and failed on the code before its fix. The moons pair runs in seconds;
processes are real where the case is about processes (two `dann-train` in one folder, the
CLI's error output).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from conftest import make_cfg
from dann.errors import ConfigError
from dann.records import read_records
from dann.report.cli import main as dann_table
from dann.run.build import load_run
from dann.run.train import train
from dann.run.rescore import rescore

# 40 steps, a checkpoint every 10: a run dir with checkpoints in about two seconds
MOONS = ["pair=moons", "trainer.max_steps=40", "trainer.val_check_interval=20", "checkpoint.every_n_steps=10",
         "trainer.log_every_n_steps=10", "deterministic=true"]


def record(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "results.json").read_text())


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


class SigtermAt(pl.Callback):
    """A real SIGTERM to this process after step ``k`` (what `kill` or a SLURM pre-emption does)."""

    def __init__(self, k: int):
        self.k = k

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.k:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished moons run that kept every checkpoint (step=000010.ckpt ... and last.ckpt)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    train(make_cfg(out, *MOONS, "checkpoint.keep_all=true"))
    return out


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> Path:
    """A moons run stopped by SIGTERM at step 20: record `interrupted`, checkpoints/last.ckpt at step 20."""
    out = tmp_path_factory.mktemp("interrupted") / "run"
    with pytest.raises((SystemExit, KeyboardInterrupt)):
        train(make_cfg(out, *MOONS), callbacks=[SigtermAt(20)])
    assert record(out)["status"] == "interrupted"
    return out


# -- 2. no code runs from a received checkpoint --------------------------------------------------
class CreatesFile:
    """A pickle payload: unpickling it calls ``open(path, "w")``, which creates the file."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def poison(ckpt: Path, marker: Path) -> None:
    """Rewrite ``ckpt`` as a real checkpoint plus a payload whose unpickling creates ``marker``."""
    c = torch.load(ckpt, weights_only=True, map_location="cpu")
    c["payload"] = CreatesFile(marker)
    torch.save(c, ckpt)


def test_crafted_checkpoint_is_refused_by_load_run(finished, tmp_path):
    run = copy_run(finished, tmp_path / "run")  # load_run: scripts/evaluate.py and scripts/tsne.py
    marker = tmp_path / "pwned"
    poison(run / "checkpoints" / "last.ckpt", marker)
    with pytest.raises(ValueError, match=r"last\.ckpt.*refused"):
        load_run(run)
    assert not marker.exists()


def test_crafted_checkpoint_is_refused_by_rescore(finished, tmp_path):
    run = copy_run(finished, tmp_path / "run")
    marker = tmp_path / "pwned"
    poison(run / "checkpoints" / "step=000020.ckpt", marker)
    with pytest.raises(ValueError, match=r"step=000020\.ckpt.*refused"):
        rescore(run, samples=50)
    assert not marker.exists()


@pytest.mark.parametrize("how", ["auto", "path"])
def test_crafted_checkpoint_is_refused_on_resume(finished, interrupted, tmp_path, how):
    # resume=auto reads the checkpoint of an unfinished run (a finished one it leaves alone)
    run = copy_run(interrupted if how == "auto" else finished, tmp_path / "run")
    ckpt = run / "checkpoints" / "last.ckpt"
    marker = tmp_path / "pwned"
    poison(ckpt, marker)
    before = (run / "results.json").read_bytes()
    out = run if how == "auto" else tmp_path / "other"
    with pytest.raises(ValueError, match=r"last\.ckpt.*refused"):
        train(make_cfg(out, *MOONS, f"resume={'auto' if how == 'auto' else ckpt}"))
    assert not marker.exists()
    assert (run / "results.json").read_bytes() == before  # the run's own record is left as it was


# -- 3. checkpoints: a temporary file in their own folder, then a rename ----------------------------
def test_checkpoints_are_written_beside_their_file_not_in_the_system_temp_folder(tmp_path, monkeypatch):
    # A system temp folder that cannot hold files: a write that goes through it fails (and one that
    # moves a file from it to another file system is not atomic); a write beside the file succeeds.
    not_a_folder = tmp_path / "tmp_is_a_file"
    not_a_folder.write_text("")
    monkeypatch.setattr(tempfile, "tempdir", str(not_a_folder))
    rec = train(make_cfg(tmp_path / "run", *MOONS))
    assert rec["status"] == "finished"
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["last.ckpt"]  # no temp left
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 40


# -- 4. a resume with another config is refused, naming each key -----------------------------------
@pytest.mark.parametrize("override, key, old, new", [
    ("optim.lr=0.1", "optim.lr", "0.5", "0.1"),
    ("seed=1", "seed", "0", "1"),
    ("trainer.max_steps=80", "trainer.max_steps", "40", "80"),
    ("pair.target=moons", "pair.target", "moons_rot35", "moons"),
    ("method=source_only", "method.name", "dann", "source_only"),  # not a raw state_dict RuntimeError
    ("model.hidden=20", "model.hidden", "15", "20"),  # another architecture: the same error
])
def test_resume_with_a_changed_config_is_refused_naming_the_key(interrupted, tmp_path, override, key, old, new):
    run = copy_run(interrupted, tmp_path / "run")
    rec_before = (run / "results.json").read_bytes()
    ckpt_before = (run / "checkpoints" / "last.ckpt").read_bytes()
    with pytest.raises(ValueError, match="resume") as e:
        train(make_cfg(run, *MOONS, override, "resume=auto"))
    msg = str(e.value)
    assert f"{key}: {old} (checkpoint) -> {new} (now)" in msg, msg
    assert (run / "results.json").read_bytes() == rec_before  # still `interrupted`, not overwritten
    assert (run / "checkpoints" / "last.ckpt").read_bytes() == ckpt_before


def test_resume_may_change_logging_paths_and_placement(interrupted, tmp_path):
    run = copy_run(interrupted, tmp_path / "run")
    rec = train(make_cfg(run, *MOONS, "resume=auto", "logger=csv", "trainer.log_every_n_steps=5",
                         "data.eval_batch_size=100", "trainer.enable_model_summary=true"))
    assert rec["status"] == "finished" and rec["steps"] == 40 and rec["resumed_from"].endswith("last.ckpt")


def test_checkpoint_without_a_saved_config_is_compared_with_the_run_record(interrupted, tmp_path):
    # A checkpoint written before configs were saved in checkpoints: the run folder's record
    # (written when the run was interrupted) holds the config to compare with.
    run = copy_run(interrupted, tmp_path / "run")
    ckpt = run / "checkpoints" / "last.ckpt"
    c = torch.load(ckpt, weights_only=True)
    c.pop("dann_config", None)
    torch.save(c, ckpt)
    with pytest.raises(ValueError, match=r"optim\.lr: 0\.5 \(checkpoint\) -> 0\.1 \(now\)"):
        train(make_cfg(run, *MOONS, "optim.lr=0.1", "resume=auto"))


def test_resume_from_another_runs_checkpoint_with_another_network_is_refused(finished, tmp_path):
    # resume=PATH may change the method (SA on a source-only run) but not the network or the data.
    with pytest.raises(ValueError, match=r"model\.hidden: 15 \(checkpoint\) -> 20 \(now\)"):
        train(make_cfg(tmp_path / "other", *MOONS, "model.hidden=20",
                       f"resume={finished / 'checkpoints' / 'last.ckpt'}"))


def test_resume_path_with_a_method_whose_network_differs_is_refused_clearly(tmp_path):
    so = tmp_path / "so"
    train(make_cfg(so, *MOONS, "method=source_only"))
    with pytest.raises(ValueError, match=r"(?s)source_only.*dann.*discriminator") as e:
        train(make_cfg(tmp_path / "dann", *MOONS, f"resume={so / 'checkpoints' / 'last.ckpt'}"))
    assert "Missing key" not in str(e.value)  # not torch's raw load_state_dict message
    assert not (tmp_path / "dann" / "results.json").exists()


# -- 5. one process per run folder ------------------------------------------------------------------
CLI_FAST = ["trainer.enable_progress_bar=false", "trainer.accelerator=cpu", "logger=csv"]


def dann_train_cmd(run_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "dann.run.train", *CLI_FAST, f"hydra.run.dir={run_dir}", *overrides]


def cli_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "DANN_DOWNLOAD")}
    return {**env, "WANDB_MODE": "offline", "WANDB_SILENT": "true", **extra}


def test_a_second_process_in_a_run_folder_fails_at_once_naming_the_holder(tmp_path):
    run = tmp_path / "run"
    long = ["pair=moons", "trainer.max_steps=10000000", "trainer.val_check_interval=10000000",
            "checkpoint.every_n_steps=10000000", "probe.enabled=false"]
    first = subprocess.Popen(dann_train_cmd(run, *long), cwd=tmp_path, env=cli_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while not (run / "metrics.csv").exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.5)  # metrics.csv: the first run is training
        assert first.poll() is None, first.stderr.read()[-3000:]
        hydra_files = {p.name: p.read_bytes() for p in (run / ".hydra").iterdir()}
        second = subprocess.run(dann_train_cmd(run, *long, "trainer.max_steps=5"), cwd=tmp_path, env=cli_env(), capture_output=True,
                                text=True, timeout=180)
        assert first.poll() is None  # the first run was not disturbed
        assert second.returncode != 0
        assert str(run) in second.stderr and f"pid {first.pid}" in second.stderr, second.stderr[-3000:]
        assert "Traceback" not in second.stderr
        assert not (run / "results.json").exists()  # the second wrote no record
        # nor rewrote the first one's .hydra/ (Hydra used to, before any check ran): issue #33
        assert {p.name: p.read_bytes() for p in (run / ".hydra").iterdir()} == hydra_files
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(120)
    assert record(run)["status"] == "interrupted" and record(run)["pid"] == first.pid


# -- 6 and 12. the CLI: one clean line, exit 2, before any data loads ---------------------------------
def cli(tmp_path: Path, *overrides: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(dann_train_cmd(tmp_path / "run", *overrides), cwd=tmp_path, env=cli_env(**env),
                          capture_output=True, text=True, timeout=300)


def assert_clean_error(out: subprocess.CompletedProcess, *needles: str) -> str:
    assert out.returncode == 2, (out.returncode, out.stderr[-3000:])
    assert "Traceback" not in out.stderr + out.stdout, out.stderr[-3000:]
    # one message (it may run over lines, e.g. a missing dataset's files), after any warnings
    message = out.stderr[out.stderr.find("dann-train: error: "):]
    assert out.stderr.count("dann-train: error: ") == 1 and message, out.stderr[-3000:]
    for n in needles:
        assert n in message, (n, out.stderr[-3000:])
    return message


@pytest.mark.parametrize("override, key", [("+model.hiden=20", "model.hiden"),
                                           ("trainer.max_steps=abc", "trainer.max_steps")])
def test_cli_config_error_is_one_clean_line_before_data_loads(tmp_path, override, key):
    out = cli(tmp_path, "pair=moons", override)
    assert_clean_error(out, key)
    assert not (tmp_path / "run" / "results.json").exists() and not (tmp_path / "run" / "metrics.csv").exists()


def test_cli_missing_dataset_is_one_clean_line_and_a_failed_record(tmp_path):
    empty = tmp_path / "data"
    empty.mkdir()
    out = cli(tmp_path, "pair=mnist_mnistm", f"data.root={empty}")
    assert_clean_error(out, "mnist")
    rec = record(tmp_path / "run")
    assert rec["status"] == "failed" and "DatasetNotFoundError" in rec["error"] and rec["steps"] == 0


def test_cli_refused_resume_is_one_clean_line(tmp_path):
    train(make_cfg(tmp_path / "run", *MOONS, "logger=csv"))
    before = (tmp_path / "run" / "results.json").read_bytes()
    out = cli(tmp_path, *MOONS, "resume=auto", "optim.lr=0.1")
    assert_clean_error(out, "optim.lr: 0.5 (finished run) -> 0.1 (now)")  # compared with its record
    assert (tmp_path / "run" / "results.json").read_bytes() == before


def test_cli_full_traceback_on_request(tmp_path):
    out = cli(tmp_path, "pair=moons", "+model.hiden=20", HYDRA_FULL_ERROR="1")
    assert out.returncode != 0 and "Traceback" in out.stderr and "model.hiden" in out.stderr


# -- 7. bad values get a ConfigError naming the key and the fix -------------------------------------
def test_negative_seed_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"seed=-1"):
        train(make_cfg(tmp_path / "run", "seed=-1"))


def read_only_folder(tmp_path: Path) -> Path:
    """A folder this process cannot write in (root ignores permissions: then /sys, if it is such)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    for d in (ro, Path("/sys")):
        try:
            tempfile.TemporaryFile(dir=d).close()
        except OSError:
            return d
    pytest.skip("no folder this process cannot write in")


@pytest.mark.parametrize("how", ["file", "uncreatable", "read-only"])
def test_unusable_data_root_is_a_config_error(tmp_path, how):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    root = {"file": a_file, "uncreatable": a_file / "sub", "read-only": None}[how] or read_only_folder(tmp_path)
    with pytest.raises(ConfigError, match=r"data\.root=") as e:
        train(make_cfg(tmp_path / "run", "pair=mnist_mnistm", f"data.root={root}"))
    assert str(root) in str(e.value) and "DANN_DATA_DIR" in str(e.value)  # how to fix it


def test_a_batch_larger_than_the_data_names_data_batch_size(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.batch_size=1000000") as e:
        train(make_cfg(tmp_path / "run", "pair=moons", "data.batch_size=1000000"))
    assert "hold out fewer" not in str(e.value)


# -- 8. a setup failure writes a record; a run folder without one is listed -------------------------
def test_setup_failure_writes_a_failed_record(tmp_path, monkeypatch):
    monkeypatch.delenv("DANN_DOWNLOAD", raising=False)
    empty = tmp_path / "data"
    empty.mkdir()
    with pytest.raises(Exception, match="not found"):
        train(make_cfg(tmp_path / "run", "pair=mnist_mnistm", f"data.root={empty}"))
    rec = record(tmp_path / "run")
    assert rec["status"] == "failed" and "DatasetNotFoundError" in rec["error"] and rec["steps"] == 0
    good, bad = read_records(tmp_path)
    assert [r["status"] for r in good] == ["failed"] and not bad


def a_record(**changes) -> dict:
    rec = {"pair": "moons", "method": "dann", "seed": 0, "status": "finished", "source": "moons",
           "target": "moons_rot35", "config": {"seed": 0}, "git_commit": None, "steps": 40,
           "metrics": {"test/src_acc": 0.9, "test/tgt_acc": 0.8}, "wall_time_s": 1.0}
    return {**rec, **changes}


def test_table_lists_run_folders_without_a_record(tmp_path, capsys):
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "results.json").write_text(json.dumps(a_record()))
    (tmp_path / "killed" / "checkpoints").mkdir(parents=True)
    (tmp_path / "killed" / "checkpoints" / "last.ckpt").write_bytes(b"")
    (tmp_path / "killed" / "metrics.csv").write_text("step\n")
    (tmp_path / "not_a_run").mkdir()
    assert dann_table([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "without a record" in out and str(tmp_path / "killed") in out and "not_a_run" not in out


def test_table_without_any_record_names_the_unrecorded_runs(tmp_path, capsys):
    (tmp_path / "killed" / "checkpoints").mkdir(parents=True)
    assert dann_table([str(tmp_path)]) == 2
    assert str(tmp_path / "killed") in capsys.readouterr().err


# -- 10. a malformed record is listed as unreadable, with its reason --------------------------------
MALFORMED = {"null": "null", "one": "1", "metrics_x": json.dumps(a_record(metrics="x")),
             "list": "[]", "seed_text": json.dumps(a_record(seed="zero")), "config_1": json.dumps(a_record(config=1))}


def test_malformed_records_are_listed_with_their_reason(tmp_path, capsys):
    for name, text in MALFORMED.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(text)
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "results.json").write_text(json.dumps(a_record()))
    good, bad = read_records(tmp_path)
    assert [Path(r["_path"]).parent.name for r in good] == ["ok"]
    assert sorted(p.parent.name for p, _ in bad) == sorted(MALFORMED)
    reasons = {p.parent.name: why for p, why in bad}
    assert "metrics" in reasons["metrics_x"] and "seed" in reasons["seed_text"] and "config" in reasons["config_1"]
    assert "object" in reasons["null"] and "object" in reasons["one"]
    assert dann_table([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"Unreadable records (not averaged): {len(MALFORMED)}" in out
    assert dann_table([str(tmp_path / "null"), str(tmp_path / "metrics_x")]) == 2
    assert "unreadable" in capsys.readouterr().err


# -- 11. a source classifier at chance is flagged --------------------------------------------------
def test_a_run_whose_source_accuracy_ends_at_chance_is_flagged(tmp_path, capsys, caplog):
    with caplog.at_level("WARNING"):
        bad = train(make_cfg(tmp_path / "bad", "pair=moons", "optim.lr=1e3", "trainer.max_steps=50",
                             "trainer.val_check_interval=50", "probe.enabled=false"))
    assert bad["status"] == "finished" and bad["metrics"]["test/src_acc"] <= 0.55
    assert bad["source_at_chance"] is True and bad["chance_acc"] == pytest.approx(0.5, abs=0.01)
    assert record(tmp_path / "bad")["source_at_chance"] is True
    assert "chance" in caplog.text and "optim.lr" in caplog.text
    ok = train(make_cfg(tmp_path / "ok", *MOONS))
    assert ok["source_at_chance"] is False
    assert dann_table([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "source accuracy at chance" in out and str(tmp_path / "bad") in out and str(tmp_path / "ok") not in out
