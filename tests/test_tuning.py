"""A tiny search on the moons end to end: trials written, the study computed, a validator chosen,
its pick re-run; the search spaces hold the authors' settings; the dishonest path is named oracle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from dann.config import CONF_DIR, method_names

ROOT = Path(__file__).resolve().parent.parent
SPACES = sorted(p.stem for p in Path(CONF_DIR, "search", "tune").glob("*.yaml"))


def _env():
    return dict(os.environ, WANDB_MODE="offline", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


@pytest.mark.parametrize("method", SPACES)
def test_every_space_holds_the_authors_setting_and_only_real_options(method):
    """Trial 0 (sampler.first) sets every searched key and lies in each range; each key is an
    option of the method or a key of the shared recipe (optim.*)."""
    from hydra_plugins.hydra_optuna_sweeper._impl import create_optuna_distribution_from_override
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from dann.config import method_class
    from dann.run.search import _in_space

    space = OmegaConf.to_container(OmegaConf.load(Path(CONF_DIR, "search", "tune", f"{method}.yaml")))
    first, params = space["sampler"]["first"], space["params"]
    assert set(first) == set(params), "trial 0 must set every searched key"
    yaml = OmegaConf.to_container(OmegaConf.load(Path(CONF_DIR, "method", f"{method}.yaml")))
    options = method_class(yaml).option_defaults()
    parser = OverridesParser.create()
    for key, spec in params.items():
        group, _, name = key.partition(".")
        assert (group == "method" and name in options) or (group == "optim" and name in ("lr", "weight_decay")), key
        dist = create_optuna_distribution_from_override(parser.parse_override(f"{key}={spec}"))
        assert _in_space(dist, first[key]), f"{key}={first[key]} is outside {spec}"


def test_every_adaptation_method_of_the_table_has_a_space():
    assert set(SPACES) >= {"dann", "dan", "coral", "cdan", "cdan_e", "mdd", "mcc", "mcd", "adda"}
    assert set(SPACES) <= set(method_names())


@pytest.mark.slow
def test_a_tiny_search_on_the_moons_end_to_end(tmp_path):
    sweep = tmp_path / "sweep"
    p = subprocess.run([sys.executable, "-m", "dann.run.train", "-m", "hparams_search=tune", "method=dann", "pair=moons",
                        "hydra.sweeper.n_trials=3", "trainer.max_steps=40", "trainer.val_check_interval=10",
                        "checkpoint.every_n_steps=10", "logger=csv", "trainer.enable_progress_bar=false",
                        f"hydra.sweep.dir={sweep}"], capture_output=True, text=True, env=_env(), cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    recs = [json.loads(r.read_text()) for r in sorted(sweep.glob("*/results.json"))]
    assert len(recs) == 3 and all(r["status"] == "finished" and r["search"]["reads_target_labels"] is False
                                  for r in recs)
    assert recs[0]["config"]["optim"]["lr"] == 0.01 and recs[0]["config"]["method"]["trade_off"] == 1.0  # trial 0
    assert len({r["config"]["optim"]["lr"] for r in recs}) == 3                                         # then random
    for t in sweep.glob("*_dann_moons_s0"):
        assert len(list((t / "evaluations.jsonl").read_text().splitlines())) == 4
        assert len(list((t / "checkpoints").glob("step=*.ckpt"))) == 4
        assert len(list((t / "predictions").glob("step=*.npy"))) == 4
    table = [sys.executable, "-m", "dann.report.cli", str(sweep)]
    choice = tmp_path / "choice.json"
    st = subprocess.run([*table, "--selection-study", "--choose-validator", "moons", "--choice-out", str(choice)],
                        capture_output=True, text=True, env=_env())
    assert st.returncode == 0, st.stderr
    assert "| ensv |" in st.stdout and "| 12 | 3 |" in st.stdout     # 12 checkpoints of 3 trials
    rule = json.loads(choice.read_text())["validator"]
    # the choice applied to the pair it was chosen on: labelled oracle; a plain rule: not
    tu = subprocess.run([*table, "--tuned", str(choice), "--tuned-out", str(tmp_path / "picks.json")],
                        capture_output=True, text=True, env=_env())
    assert tu.returncode == 0, tu.stderr
    picks = json.loads((tmp_path / "picks.json").read_text())
    assert picks[0]["oracle_pick"] and "oracle: chosen on moons" in tu.stdout
    plain = subprocess.run([*table, "--tuned", "src_val"], capture_output=True, text=True, env=_env())
    assert plain.returncode == 0 and "oracle: chosen" not in plain.stdout
    # the pick re-run (here at the same short length) with its hyper-parameters
    over = picks[0]["pick"]["overrides"]
    assert {o.split("=")[0] for o in over} == {"optim.lr", "optim.weight_decay", "method.trade_off", "method.gamma"}
    rerun = tmp_path / "rerun"
    r = subprocess.run([sys.executable, "-m", "dann.run.train", "pair=moons", "method=dann", *over, "logger=csv",
                        "trainer.max_steps=40", "trainer.enable_progress_bar=false", f"hydra.run.dir={rerun}"],
                       capture_output=True, text=True, env=_env(), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    rec = json.loads((rerun / "results.json").read_text())
    picked = json.loads((Path(picks[0]["pick"]["run"]) / "results.json").read_text())
    assert rec["config"]["optim"] == picked["config"]["optim"] and rec["config"]["method"] == picked["config"]["method"]
    assert rule in st.stdout


@pytest.mark.slow
def test_a_search_on_target_labels_is_named_oracle_and_a_bad_objective_runs_nothing(tmp_path):
    base = [sys.executable, "-m", "dann.run.train", "-m", "hparams_search=tune", "method=dann", "pair=moons",
            "hydra.sweeper.n_trials=1", "trainer.max_steps=20", "trainer.val_check_interval=10", "logger=csv",
            "trainer.enable_progress_bar=false"]
    bad = subprocess.run([*base, "objective=select/oracle", f"hydra.sweep.dir={tmp_path / 'bad'}"],
                         capture_output=True, text=True, env=_env(), cwd=tmp_path)
    assert bad.returncode == 2 and "objective='select/oracle'" in bad.stderr
    assert not list((tmp_path / "bad").glob("*/results.json"))
    orc = subprocess.run([*base, "objective=test/tgt_acc", f"hydra.sweep.dir={tmp_path / 'orc'}"],
                         capture_output=True, text=True, env=_env(), cwd=tmp_path)
    assert orc.returncode == 0, orc.stderr[-2000:]
    assert "tune_dann_moons_ORACLE" in orc.stdout + orc.stderr
    rec = json.loads(next((tmp_path / "orc").glob("*/results.json")).read_text())
    assert rec["search"] == {"objective": "test/tgt_acc", "reads_target_labels": True}


def _rec(root, name, method, acc, pair="mnist_mnistm", **fields):
    from dann.records import write_record

    write_record(root / name, {"pair": pair, "method": method, "seed": 0, "status": "finished", "config": {},
                               "git_commit": None, "steps": 15000, "metrics": {"test/tgt_acc": acc},
                               "wall_time_s": 1.0, **fields})


def test_the_table_of_record_and_its_refusal_on_the_pair_the_validator_was_chosen_on(tmp_path, capsys):
    from dann.report.cli import main as table

    for i, acc in enumerate((0.74, 0.75)):
        _rec(tmp_path / "default", f"dann_s{i}", "dann", acc)
        _rec(tmp_path / "finals" / "label_free", f"dann_s{i}", "dann", acc + 0.02)
        _rec(tmp_path / "finals" / "label_free", f"cdan_s{i}", "cdan", 0.7)
        _rec(tmp_path / "finals" / "oracle", f"dann_s{i}", "dann", acc + 0.04)
    _rec(tmp_path / "default", "cdan_s0", "cdan", 0.72)
    over = lambda lr: {"run": "x", "step": 150, "tgt_acc": 0.5, "overrides": [f"optim.lr={lr}"]}  # noqa: E731
    picks = [{"pair": "mnist_mnistm", "method": "dann", "trials": 12, "pick": over(0.02), "oracle": over(0.05)},
             {"pair": "mnist_mnistm", "method": "cdan", "trials": 12, "pick": over(0.01), "oracle": over(0.01)}]
    (tmp_path / "picks.json").write_text(json.dumps(picks))
    (tmp_path / "choice.json").write_text(json.dumps({"validator": "im", "chosen_on": "mnist_mnistm_regen"}))
    args = [str(tmp_path / "default"), "--tuning-record", str(tmp_path / "picks.json"), str(tmp_path / "finals"),
            str(tmp_path / "choice.json")]
    assert table(args) == 0
    out = capsys.readouterr().out
    dann = next(ln for ln in out.splitlines() if ln.startswith("| dann "))
    assert dann.split("|")[3:6] == [" .7450 ± .0071 (2) ", " .7650 ± .0071 (2) ", " .7850 ± .0071 (2) "]
    cdan = next(ln for ln in out.splitlines() if ln.startswith("| cdan "))
    assert "(the same configuration)" in cdan and "chosen on mnist_mnistm_regen" in out and "oracle" in out
    (tmp_path / "choice.json").write_text(json.dumps({"validator": "im", "chosen_on": "mnist_mnistm"}))
    assert table(args) == 2
    assert "chosen on mnist_mnistm's own target labels" in capsys.readouterr().err


def _record_row(tmp_path, capsys, method: str, overrides: list[str], row: str) -> str:
    """The table of record over ``tmp_path/default`` and ``tmp_path/finals`` with one search of
    ``method`` (the oracle's pick the same) and the validator chosen on the regenerated pair: its
    line of ``row``."""
    from dann.report.cli import main as table

    pick = {"run": "x", "step": 150, "tgt_acc": 0.5, "overrides": overrides}
    (tmp_path / "picks.json").write_text(json.dumps([{"pair": "mnist_mnistm", "method": method, "trials": 12,
                                                       "pick": pick, "oracle": pick}]))
    (tmp_path / "choice.json").write_text(json.dumps({"validator": "im", "chosen_on": "mnist_mnistm_regen"}))
    assert table([str(tmp_path / "default"), "--tuning-record", str(tmp_path / "picks.json"),
                  str(tmp_path / "finals"), str(tmp_path / "choice.json")]) == 0
    return next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(f"| {row} "))


def test_the_default_recipe_cell_keeps_protocols_apart(tmp_path, capsys):
    """ADDA's default runs with Adam and with SGD are two recipes: never one mean."""
    from dann.records import write_record

    for i, (opt, acc) in enumerate((("adam", 0.76), ("adam", 0.77), ("sgd", 0.40))):
        write_record(tmp_path / "default" / f"adda_{opt}_s{i}",
                     {"pair": "mnist_mnistm", "method": "adda", "seed": i, "status": "finished",
                      "config": {"method": {"name": "adda", "optimizer": opt}}, "git_commit": None, "steps": 15000,
                      "metrics": {"test/tgt_acc": acc}, "wall_time_s": 1.0})
    _rec(tmp_path / "finals" / "label_free", "adda_s0", "adda", 0.8)
    adda = _record_row(tmp_path, capsys, "adda", ["method.adam_lr=0.001"], "adda")
    assert adda.split("|")[3] == " .7650 ± .0071 (2) [method.optimizer=adam]; .4000 (1) [method.optimizer=sgd] "


def test_sa_has_a_row_of_record_its_subspace_size_chosen_by_the_validator(tmp_path, capsys):
    """SA has no search: its d is chosen at test time, by IM (select=im) among method.sa_dims, in the
    runs that report the oracle's d beside it; its default cell is the last-step rule's runs only."""
    from dann.records import write_record

    def sa(root, name, selection, metrics):
        write_record(root / name, {"pair": "mnist_mnistm", "method": "sa", "seed": 0, "status": "finished",
                                   "selection": selection, "config": {"method": {"name": "sa", "sa_dim": 50,
                                   "select": selection, "sa_dims": [2, 5, 10, 20]}}, "git_commit": None,
                                   "steps": 15000, "metrics": metrics, "wall_time_s": 1.0})

    sa(tmp_path / "default", "sa_s0", "last", {"test/tgt_acc": 0.60, "sa/dim": 50})
    sa(tmp_path / "default", "sa_s1", "last_step", {"test/tgt_acc": 0.61, "sa/dim": 50})  # older records' name
    sa(tmp_path / "default", "sa_oracle_s0", "oracle", {"test/tgt_acc": 0.70, "sa/dim": 5})
    for i, (acc, d) in enumerate(((0.62, 10), (0.63, 20))):
        sa(tmp_path / "finals" / "label_free", f"sa_s{i}", "im",
           {"test/tgt_acc": acc, "sa/dim": d, "sa/oracle_tgt_acc": acc + 0.02, "sa/oracle_dim": 5})
    _rec(tmp_path / "finals" / "label_free", "dann_s0", "dann", 0.77)
    cells = _record_row(tmp_path, capsys, "dann", ["optim.lr=0.01"], "sa").split("|")
    assert cells[2].strip() == "4 sizes of d"
    assert cells[3].strip() == ".6050 ± .0071 (2), d = 50"
    assert cells[4].strip() == ".6250 ± .0071 (2), d = 10, 20"
    assert cells[5].strip() == ".6450 ± .0071 (2), d = 5, 5 (the same runs)"


def test_a_cell_of_record_says_how_many_of_its_runs_collapsed(tmp_path, capsys):
    """A pick that collapses at the full length stays in the last-step mean (the rule chose it) and
    the cell says so, with the step."""
    _rec(tmp_path / "default", "mcc_s0", "mcc", 0.57)
    _rec(tmp_path / "finals" / "label_free", "mcc_s0", "mcc", 0.11, collapsed_at_step=1000, source_at_chance=True)
    _rec(tmp_path / "finals" / "label_free", "mcc_s1", "mcc", 0.65)
    cells = _record_row(tmp_path, capsys, "mcc", ["optim.lr=0.06"], "mcc").split("|")
    assert cells[3].strip() == ".5700 (1)"
    assert cells[4].strip() == ".3800 ± .3818 (2; 1 collapsed to chance, at step 1000)"
