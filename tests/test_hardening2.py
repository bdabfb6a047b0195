"""Issue #33, hardening second pass: the three failures and the rules, one test (or one
parametrised group) each. Each was written first and failed on the code before its fix.

The rules: a run folder holds one run; a resume is the same run or nothing; a received file is
data; every refusal is one line (exit status 2) in every entry point; exit status tells the truth;
archives and label files stay in bounds; a full disk loses nothing.
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import make_cfg
from dann.errors import CheckpointError, ResumeError
from dann.run.train import train
from test_hardening import MOONS, SigtermAt, cli_env, copy_run, dann_train_cmd, interrupted, record  # noqa: F401 (a fixture)

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


# == the rule "a received file is data": records, evaluations and text in tables ====================
def a_record(**changes) -> dict:
    rec = {"pair": "moons", "method": "dann", "seed": 0, "status": "finished", "source": "moons",
           "target": "moons_rot35", "config": {"seed": 0}, "git_commit": None, "steps": 40,
           "metrics": {"test/src_acc": 0.9, "test/tgt_acc": 0.8}, "wall_time_s": 1.0}
    return {**rec, **changes}


OUT_OF_MEANING = {  # folder -> (the record's text, what the reason names)
    "acc_79": (json.dumps(a_record(metrics={"test/tgt_acc": 79})), "test/tgt_acc is 79"),
    "acc_negative": (json.dumps(a_record(metrics={"test/tgt_acc": -0.5})), "test/tgt_acc is -0.5"),
    "infinity": (json.dumps(a_record(metrics={"test/tgt_acc": float("inf")})), "test/tgt_acc is inf"),
    "seed_negative": (json.dumps(a_record(seed=-1)), "seed is -1"),
    "steps_negative": (json.dumps(a_record(steps=-40)), "steps is -40"),
    "chance_flag_text": (json.dumps(a_record(source_at_chance="no")), "source_at_chance"),
    "diverged_text": (json.dumps(a_record(diverged_at_step="soon")), "diverged_at_step"),
}


def test_records_with_values_outside_their_meaning_are_listed_unreadable_never_averaged(tmp_path, capsys):
    from dann.records import read_records
    from dann.report.cli import main as dann_table

    for name, (text, _) in OUT_OF_MEANING.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(text)
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "results.json").write_text(json.dumps(a_record(_copies=["planted"])))
    good, bad = read_records(tmp_path)
    assert [Path(r["_path"]).parent.name for r in good] == ["ok"] and "_copies" not in good[0]
    reasons = {p.parent.name: why for p, why in bad}
    for name, (_, why) in OUT_OF_MEANING.items():
        assert why in reasons.get(name, ""), (name, reasons.get(name))
    assert dann_table([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert ".8000 ± — (1)" in out and f"Unreadable records (not averaged): {len(OUT_OF_MEANING)}" in out
    assert "planted" not in out


BAD_EVALUATIONS = {  # folder -> (evaluations.jsonl, what the reason names)
    "no_step": ('{"tgt_acc": 0.9}\n', "no step"),
    "step_text": ('{"step": "x", "tgt_acc": 0.9}\n', "step is \"x\""),
    "acc_79": ('{"step": 10, "tgt_acc": 79}\n', "tgt_acc is 79"),
    "infinity": ('{"step": 10, "tgt_acc": 0.5, "entropy": Infinity}\n', "entropy is inf"),
    "not_an_object": ('[1, 2]\n', "not an object"),
}


@pytest.mark.parametrize("select", ["oracle", "last_k", "entropy"])
def test_evaluations_outside_their_meaning_are_listed_never_averaged_or_crashed_on(tmp_path, capsys, select):
    from dann.report.cli import main as dann_table

    for name, (evals, _) in {**BAD_EVALUATIONS, "ok": ('{"step": 10, "tgt_acc": 0.7, "entropy": 0.1}\n', "")}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(a_record(seed=len(name))))
        (tmp_path / name / "evaluations.jsonl").write_text(evals)
    assert dann_table([str(tmp_path), "--select", select, "--curves", str(tmp_path / "c.png")]) == 0
    captured = capsys.readouterr()
    assert ".7000 ± — (1)" in captured.out, captured.out  # the good run alone
    for name, (_, why) in BAD_EVALUATIONS.items():
        line = next((ln for ln in captured.out.splitlines() if f"{tmp_path / name}" in ln), "")
        assert "evaluations.jsonl" in line and why in line, (name, line)


HOSTILE = "=HYPERLINK(\"http://x\")|<img src=x onerror=alert(1)>\n\\input{/etc/passwd}`x`[a](javascript:y)$x$"


@pytest.mark.parametrize("fmt", ["markdown", "latex", "csv"])
def test_text_from_a_record_is_escaped_wherever_a_table_prints_it(tmp_path, capsys, fmt):
    from dann.report.cli import main as dann_table

    for name, rec in {"a": a_record(method=HOSTILE, config={"seed": 0, "method": {"x": HOSTILE}}),
                      "b": a_record(method=HOSTILE, seed=1, config={"seed": 1, "method": {"x": 1}}),
                      "c": a_record(status="failed", error=HOSTILE, metrics={})}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(rec))
    assert dann_table([str(tmp_path), "--format", fmt, "--png", str(tmp_path / "bars.png")]) == 0
    out = capsys.readouterr()
    text = out.out + out.err
    assert "\n\\input" not in text and "\x1b" not in text
    if fmt == "markdown":
        rows = [ln for ln in out.out.splitlines() if ln.startswith("| ")]
        assert all(len(re.findall(r"(?<!\\)\|", ln)) == 3 for ln in rows), rows  # method + one column
        for raw in ("<img", "](javascript", "`x`"):  # HTML, a link, a code span: only escaped
            assert not re.search(r"(?<!\\)" + re.escape(raw), out.out), raw
    if fmt == "latex":
        body = [ln for ln in out.out.splitlines() if not ln.startswith("%")]  # notes are comments, one a line
        assert not any("\\input{" in ln for ln in body) and "\\textbackslash{}input\\{" in out.out
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(out.out)))
        assert rows and all(r["method"].startswith("'=HYPERLINK") for r in rows)  # no formula for a spreadsheet
    assert (tmp_path / "bars.png").stat().st_size > 0  # `$x$` is text in the figure, not broken math


# == received run folders in scripts/evaluate.py and scripts/tsne.py =================================
SCRIPTS = {"evaluate": ["scripts/evaluate.py", "{run}", "--domain", "moons_rot35"],
           "tsne": ["scripts/tsne.py", "{run}", "--out", "{tmp}/t.png", "--n", "50"]}


def script(name: str, run: Path, tmp: Path, *extra: str, **env: str) -> subprocess.CompletedProcess:
    args = [a.format(run=run, tmp=tmp) for a in SCRIPTS[name]]
    return subprocess.run([sys.executable, str(ROOT / args[0]), *args[1:], *extra], cwd=tmp, capture_output=True,
                          text=True, timeout=600, env=cli_env(**env))


def edit_record(run: Path, edit) -> None:
    rec = record(run)
    edit(rec)
    (run / "results.json").write_text(json.dumps(rec))


EVIL_MODULE = "import pathlib, os\npathlib.Path(os.environ['DANN_TEST_MARKER']).write_text('ran')\nclass Evil: pass\n"
RECEIVED = {  # case -> (how the run folder is damaged, what the one line says)
    "unknown_target": (lambda run: edit_record(run, lambda r: r["config"]["method"].update(_target_="evil_mod.Evil")),
                       "method._target_='evil_mod.Evil' is not a method class"),
    "name_outside_conf": (lambda run: edit_record(run, lambda r: (r["config"]["method"].pop("_target_"),
                                                                 r["config"]["method"].update(name="../../../x"))),
                          "method.name='../../../x' is not a method"),
    "interpolation": (lambda run: edit_record(run, lambda r: r["config"].update(seed="${oc.env:DANN_TEST_MARKER}")),
                      "config.seed holds an interpolation"),
    "other_architecture": (lambda run: edit_record(run, lambda r: r["config"]["model"].update(hidden=20)),
                           "does not fit the network its record describes"),
    "truncated_checkpoint": (lambda run: truncate(run / "checkpoints" / "last.ckpt"), "cannot be read"),
    "no_record": (lambda run: (run / "results.json").unlink(), "no results.json"),
    "not_a_record": (lambda run: (run / "results.json").write_text('{"pair": "moons", "seed": -1}'),
                     "not a usable record"),
}


@pytest.mark.parametrize("case", RECEIVED)
@pytest.mark.parametrize("entry", SCRIPTS)
def test_a_received_run_folder_is_checked_before_use_and_refused_in_one_line(finished, tmp_path, entry, case):
    run = copy_run(finished, tmp_path / "run")
    damage, says = RECEIVED[case]
    damage(run)
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "evil_mod.py").write_text(EVIL_MODULE)
    marker = tmp_path / "marker"
    out = script(entry, run, tmp_path, PYTHONPATH=f"{ROOT}:{tmp_path / 'mods'}", DANN_TEST_MARKER=str(marker))
    one_line_error(out, entry, says)
    assert not marker.exists()  # nothing named by the record was imported


def test_a_received_record_creates_no_folder_where_it_points(finished, tmp_path):
    import numpy as np

    run = copy_run(finished, tmp_path / "run")
    np.savez(tmp_path / "mine.npz", x=np.zeros((64, 4, 4), np.uint8), y=np.arange(64) % 2)
    elsewhere = tmp_path / "elsewhere" / "deep"

    def point_elsewhere(r):
        r["config"]["domains"] = {"mine": {"kind": "npz", "train": str(tmp_path / "mine.npz"),
                                           "test": str(tmp_path / "mine.npz")}}
        r["config"]["pair"].update(source="mine", target="mine")
        r["config"]["data"]["root"] = str(elsewhere)

    edit_record(run, point_elsewhere)
    out = script("evaluate", run, tmp_path, DANN_DATA_DIR=str(tmp_path / "mydata"))
    one_line_error(out, "evaluate", "cannot take inputs of shape (1, 4, 4)")  # a moons network for 4x4 images
    assert not (tmp_path / "elsewhere").exists()
    assert (tmp_path / "mydata" / "cache").is_dir()  # the caches went to this machine's data root


# == the rule "every refusal is one line", dann-train: before any data loads =========================
def mount_tmpfs(where: Path, size_kb: int, read_only: bool = False) -> Path:
    """A real, small file system at ``where`` (root and mount(8) needed: else the test skips)."""
    where.mkdir(parents=True, exist_ok=True)
    opts = f"size={size_kb}k" + (",ro" if read_only else "")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}): needs root and mount")
    return where


@pytest.fixture
def mounts(tmp_path):
    made: list[Path] = []

    def mount(name: str, size_kb: int = 1024, read_only: bool = False) -> Path:
        made.append(mount_tmpfs(tmp_path / name, size_kb, read_only))
        return made[-1]

    yield mount
    for m in reversed(made):
        subprocess.run(["umount", str(m)], check=False)


TRAIN_REFUSALS = {  # case -> (overrides, what the one line says); {empty}: a data root without any dataset
    "arch_for_another_input": (["pair=moons", "model=mnist"], "model.arch=mnist cannot take inputs of shape (2,)"),
    "flat_arch_for_images": (["pair=mnist_mnistm", "model=shallow", "data.root={empty}"],
                             "model.arch=shallow cannot take inputs of shape (3, 32, 32)"),
    "image_size_too_small": (["pair=mnist_mnistm", "pair.image_size=8", "data.root={empty}"],
                             "model.arch=mnist cannot take inputs of shape (3, 8, 8)"),
    "impossible_channels": (["pair=mnist_mnistm", "pair.channels=2", "data.root={empty}"], "pair.channels=2"),
    "zero_devices": (["pair=moons", "trainer.devices=0"], "trainer.devices=0"),
    "overflowing_lr": (["pair=moons", "optim.lr=1e39"], "optim.lr=1e+39"),
    "read_only_output": (["pair=moons", "hydra.run.dir={ro}/run"], "Read-only file system"),
    "read_only_output_dir": (["pair=moons", "output_dir={ro}/run"], "output_dir={ro}/run: cannot write there"),
    "read_only_data_root": (["pair=mnist_mnistm", "data.root={ro}"], "is not writable (Read-only file system)"),
    "checkpoint_of_another_architecture": (["pair=moons", "model.hidden=20", "resume={ckpt}"],
                                           "model.hidden: 15 (checkpoint) -> 20 (now)"),
}


@pytest.mark.parametrize("case", TRAIN_REFUSALS)
def test_dann_train_refuses_in_one_line_before_any_data_loads(finished, tmp_path, mounts, case):
    overrides, says = TRAIN_REFUSALS[case]
    fill = {"empty": tmp_path / "empty", "ckpt": finished / "checkpoints" / "last.ckpt"}
    (tmp_path / "empty").mkdir()
    if "{ro}" in " ".join(overrides):
        fill["ro"] = mounts("ro", read_only=True)
    overrides = [o.format(**fill) for o in overrides]
    run = tmp_path / "run"
    out = subprocess.run([sys.executable, "-m", "dann.run.train", "trainer.enable_progress_bar=false",
                          "trainer.accelerator=cpu", "logger=csv", *MOONS[1:], *overrides]
                         + ([] if any(o.startswith("hydra.run.dir") for o in overrides) else [f"hydra.run.dir={run}"]),
                         cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=600)
    one_line_error(out, "dann-train", says.format(**fill))
    assert not (run / "results.json").exists()  # refused before the data: no failed record


# == the rule "lose nothing on a full disk" ==========================================================
class FillDiskAt(__import__("pytorch_lightning").Callback):
    """After step ``k``, fill the file system of ``folder`` but ``leave`` bytes: the next checkpoint
    cannot be written, the record can."""

    def __init__(self, k: int, folder: Path, leave: int):
        self.k, self.folder, self.leave = k, folder, leave

    def on_train_batch_end(self, trainer, *args):
        import shutil

        if trainer.global_step == self.k:
            with open(self.folder / "filler", "wb") as f:
                f.write(b"\0" * max(0, shutil.disk_usage(self.folder).free - self.leave))


def test_a_full_disk_keeps_the_last_checkpoint_and_the_record_says_why(mounts, tmp_path):
    disk = mounts("disk", size_kb=4096)
    run = disk / "run"
    with pytest.raises(OSError, match="No space left on device") as e:
        train(make_cfg(run, *MOONS), callbacks=[FillDiskAt(11, disk, leave=16 * 1024)])
    assert "last.ckpt" in str(e.value) and "resume=auto" in str(e.value)  # what to do about it
    rec = record(run)
    assert rec["status"] == "failed" and "No space left on device" in rec["error"], rec.get("error")
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 10  # it survived
    assert not [p.name for p in (run / "checkpoints").iterdir() if p.name != "last.ckpt"]  # no partial file left


def test_cli_full_disk_is_one_line(mounts, tmp_path):
    disk = mounts("disk", size_kb=32)  # room for the run's first files, not for a checkpoint
    out = dann_train(disk / "run", *MOONS, cwd=tmp_path)
    one_line_error(out, "dann-train", "No space left on device")
    if (disk / "run" / "results.json").exists():
        assert "No space left on device" in record(disk / "run")["error"]


# == "every refusal is one line": dann-data, dann-table, dann-bench, evaluate.py, tsne.py ==============
def png_claiming(path: Path, width: int, height: int) -> Path:
    """A PNG whose header says ``width`` x ``height`` (its data is one pixel): PIL refuses it on open."""
    import struct
    import zlib

    from PIL import Image

    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = 8 + 8  # signature, then length + "IHDR"
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr - 4:ihdr + 13])))
    path.write_bytes(bytes(data))
    return path


def npz_domain(tmp: Path, x, y=None) -> list[str]:
    """``--config`` and ``--root`` of dann-data for a custom npz domain named ``arr`` holding ``x``, ``y``."""
    import numpy as np

    np.savez(tmp / "arr.npz", x=x, y=np.zeros(len(x), np.int64) if y is None else y)
    (tmp / "arr.yaml").write_text(f"domains:\n  arr:\n    kind: npz\n    train: {tmp / 'arr.npz'}\n"
                                  f"    test: {tmp / 'arr.npz'}\n    num_classes: 2\n")
    return ["prepare", "arr", "--config", str(tmp / "arr.yaml"), "--root", str(tmp / "root")]


def write_tar(path: Path, members: dict[str, bytes]) -> Path:
    import tarfile

    with tarfile.open(path, "w:gz") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return path


def case_data_read_only_root(tmp, mounts, finished):
    return ["prepare", "mnist", "--root", str(mounts("ro", read_only=True))], {}, "Read-only file system"


def case_data_archive_bomb(tmp, mounts, finished):
    (tmp / "root").mkdir()
    write_tar(tmp / "root" / "mnist_m.tar.gz", {"mnist_m/mnist_m_train_labels.txt": b"0.png 1\n",
                                                "mnist_m/big.bin": bytes(2_000_000)})
    return (["prepare", "mnist_m", "--root", str(tmp / "root")], {"DANN_MAX_UNPACK_GB": "0.001"},
            "would unpack to 0.002 GB, more than the 0.001 GB allowed")


def case_data_image_bomb(tmp, mounts, finished):
    for k in ("0", "1"):
        (tmp / "imgs" / k).mkdir(parents=True)
        png_claiming(tmp / "imgs" / k / "a.png", 1, 1)
    png_claiming(tmp / "imgs" / "1" / "b.png", 20_000, 20_000)
    (tmp / "d.yaml").write_text(f"domains:\n  imgs:\n    kind: image_folder\n    train: {tmp / 'imgs'}\n"
                                f"    test_fraction: 0.5\n")
    return (["prepare", "imgs", "--config", str(tmp / "d.yaml"), "--root", str(tmp / "root")], {},
            "b.png is refused: Image size (400000000 pixels) exceeds limit")


def case_data_array_bomb(tmp, mounts, finished):
    import numpy as np

    return npz_domain(tmp, np.zeros((64, 8, 8), np.uint8)), {"DANN_MAX_UNPACK_GB": "0.000001"}, "would unpack to"


def case_data_empty_array(tmp, mounts, finished):
    import numpy as np

    return npz_domain(tmp, np.zeros((0, 8, 8), np.uint8)), {}, "holds no samples"


def case_data_misshaped_array(tmp, mounts, finished):
    import numpy as np

    return npz_domain(tmp, np.zeros((10, 8), np.uint8)), {}, "x must be uint8 of shape (N,H,W) or (N,H,W,C)"


def case_data_images_without_pixels(tmp, mounts, finished):
    import numpy as np

    return npz_domain(tmp, np.zeros((10, 0, 8), np.uint8)), {}, "with no pixel"


def case_table_read_only_out(tmp, mounts, finished):
    return [str(finished), "--out", str(mounts("ro", read_only=True) / "t.md")], {}, "Read-only file system"


def case_table_read_only_png(tmp, mounts, finished):
    return [str(finished), "--png", str(mounts("ro", read_only=True) / "t.png")], {}, "Read-only file system"


def case_bench_bad_pair(tmp, mounts, finished):
    return ["--pairs", "mnist_mnistmm", "--steps", "8", "--warmup", "2"], {}, "unknown pair 'mnist_mnistmm'"


def case_bench_bad_override(tmp, mounts, finished):
    return ["--pairs", "moons", "--steps", "8", "--warmup", "2", "+optim.lerning_rate=1"], {}, "optim.lerning_rate"


def case_bench_override_for_another_input(tmp, mounts, finished):
    return (["--pairs", "moons", "--steps", "8", "--warmup", "2", "model=mnist"], {},
            "model.arch=mnist cannot take inputs of shape (2,)")


def case_evaluate_read_only_out(tmp, mounts, finished):
    return ([str(finished), "--domain", "moons_rot35", "--out", str(mounts("ro", read_only=True) / "t.md")], {},
            "Read-only file system")


def case_tsne_read_only_out(tmp, mounts, finished):
    return [str(finished), "--n", "50", "--out", str(mounts("ro", read_only=True) / "t.png")], {}, "Read-only"


ENTRY_POINTS = {"dann-data": ["-m", "dann.data.cli"], "dann-table": ["-m", "dann.report.cli"],
                "dann-bench": ["-m", "dann.bench"], "evaluate": [str(ROOT / "scripts" / "evaluate.py")],
                "tsne": [str(ROOT / "scripts" / "tsne.py")]}
REFUSALS = {name[5:]: fn for name, fn in dict(globals()).items() if name.startswith("case_")}


@pytest.mark.parametrize("case", REFUSALS)
def test_every_entry_point_refuses_in_one_line(finished, tmp_path, mounts, case):
    entry = {"data": "dann-data", "table": "dann-table", "bench": "dann-bench", "evaluate": "evaluate",
             "tsne": "tsne"}[case.split("_")[0]]
    argv, env, says = REFUSALS[case](tmp_path, mounts, finished)
    out = subprocess.run([sys.executable, *ENTRY_POINTS[entry], *argv], cwd=tmp_path, capture_output=True, text=True,
                         timeout=600, env=cli_env(PYTHONPATH=str(ROOT), **env))
    one_line_error(out, entry, says)


# == the rule "archives and label files stay in bounds" ==============================================
def secret_png(path: Path) -> Path:
    from PIL import Image

    Image.new("RGB", (40, 40), "red").save(path)  # decodes fine: only its name can stop it being read
    return path


@pytest.mark.parametrize("name", ["../../secret.png", "/ABS/secret.png"], ids=["dotdot", "absolute"])
@pytest.mark.parametrize("domain", ["mnist_m", "syn_signs"])
def test_a_labels_file_cannot_name_an_image_outside_its_folder(tmp_path, domain, name):
    from dann.data.domains import CorruptDataError, load_split

    root = tmp_path / "root"
    name = name.replace("/ABS", str(tmp_path))
    secret_png(tmp_path / "secret.png")
    if domain == "mnist_m":
        for split in ("train", "test"):
            (root / "mnist_m" / f"mnist_m_{split}").mkdir(parents=True)
            (root / "mnist_m" / f"mnist_m_{split}_labels.txt").write_text(f"{name} 1\n")
    else:
        (root / "syn_signs" / "train").mkdir(parents=True)
        (root / "syn_signs" / "train_labelling.txt").write_text(f"{name} 1 0.9\n")
    with pytest.raises(CorruptDataError, match=r"image name .*secret\.png.* (has a '\.\.' component|is an absolute)"):
        load_split(domain, "train", root)


def test_extraction_caps_what_it_writes_and_the_cap_can_be_raised(tmp_path, monkeypatch):
    from dann.data import download as dl
    from dann.data.domains import UnsafeArchiveError

    archive = write_tar(tmp_path / "a.tar.gz", {"d/marker.txt": b"x", "d/big.bin": bytes(3_000_000)})
    monkeypatch.setenv("DANN_MAX_UNPACK_GB", "0.002")
    with pytest.raises(UnsafeArchiveError, match=r"would unpack to 0\.003 GB.*DANN_MAX_UNPACK_GB"):
        dl.extract(archive, tmp_path / "out", "marker.txt")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial-*"))  # nothing kept
    monkeypatch.setenv("DANN_MAX_UNPACK_GB", "0.01")  # the documented override
    assert (dl.extract(archive, tmp_path / "out", "marker.txt") / "big.bin").stat().st_size == 3_000_000
