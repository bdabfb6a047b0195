"""Model selection: each rule on hand-made evaluations, DEV's density ratios on Gaussians,
reverse validation ranking a good and a bad model, and the probe in real training runs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import make_cfg
from dann.errors import ConfigError
from dann.selection import (
    EVALS_FILE, RULES, density_ratio, dev_risk, entropy_score, im_score, read_evaluations, reverse_validation, select,
    snd_score,
)
from dann.run.rescore import main, rescore
from dann.run.train import train


def ev(step, tgt, **scores):
    base = dict(src_acc=0.99, src_val_acc=0.9, src_val_loss=0.3, entropy=1.0, im=0.5, snd=3.0, dev=1.0, rv=0.5)
    return {"step": step, "tgt_acc": tgt, **{**base, **scores}}


# Five evaluations; each rule's pick is a different one, so a rule reading the wrong score fails.
EVALS = [
    ev(100, 0.50, src_val_acc=0.97),          # best source validation
    ev(200, 0.80),                            # best target accuracy (oracle only)
    ev(300, 0.60, rv=0.9, entropy=0.2),       # best reverse validation, lowest entropy
    ev(400, 0.70, dev=0.1, im=0.9),           # lowest DEV risk, highest IM
    ev(500, 0.65, snd=5.0),                   # highest SND; the last evaluation
]


@pytest.mark.parametrize("rule, step, acc", [
    ("last", 500, 0.65), ("src_val", 100, 0.50), ("reverse_validation", 300, 0.60), ("dev", 400, 0.70),
    ("entropy", 300, 0.60), ("im", 400, 0.70), ("snd", 500, 0.65), ("oracle", 200, 0.80),
])
def test_each_rule_picks_the_known_evaluation(rule, step, acc):
    p = select(EVALS, rule)
    assert (p.step, p.tgt_acc) == (step, acc)
    assert p.oracle == (rule == "oracle")


def test_last_k_averages_and_ties_go_to_the_later_evaluation():
    p = select(EVALS, "last_k", k=3)
    assert p.step is None and p.tgt_acc == pytest.approx((0.60 + 0.70 + 0.65) / 3)
    assert select(EVALS, "last_k", k=100).tgt_acc == pytest.approx(np.mean([e["tgt_acc"] for e in EVALS]))
    flat = [ev(1, 0.1), ev(2, 0.2)]  # every score tied
    assert select(flat, "src_val").step == 2


def test_rules_skip_missing_scores_and_say_why_when_none_exist():
    evals = [ev(1, 0.1, dev=math.nan), ev(2, 0.2, dev=5.0), ev(3, 0.3, dev=math.nan)]
    assert select(evals, "dev").step == 2
    with pytest.raises(ValueError, match="data.src_val"):
        select([ev(1, 0.1, src_val_acc=math.nan)], "src_val")
    with pytest.raises(ValueError, match="unknown selection rule 'best'"):
        select(EVALS, "best")
    assert set(RULES) == {"last", "last_k", "src_val", "reverse_validation", "dev", "entropy", "im", "snd", "bnm",
                          "class_ami", "mixval", "iwcv", "devn", "mano", "ensv", "oracle"}
    assert [r.name for r in RULES.values() if r.oracle] == ["oracle"]


def test_prediction_scores_on_known_distributions():
    confident = torch.eye(4).repeat(25, 1)            # one-hot, all classes used
    collapsed = torch.zeros(100, 4)
    collapsed[:, 0] = 1                              # one-hot, one class only
    uniform = torch.full((100, 4), 0.25)
    assert entropy_score(confident) == pytest.approx(0, abs=1e-6)
    assert entropy_score(uniform) == pytest.approx(math.log(4), rel=1e-5)
    assert im_score(confident) == pytest.approx(math.log(4), rel=1e-5)   # the maximum
    assert im_score(collapsed) == pytest.approx(0, abs=1e-6)
    # SND: in 4 tight clusters of 25, each point's soft neighbourhood is its 24 twins (entropy
    # log 24); scattered predictions have fewer close neighbours, so a lower density
    assert snd_score(confident) == pytest.approx(math.log(24), rel=1e-3)
    scattered = torch.softmax(torch.randn(100, 4, generator=torch.Generator().manual_seed(0)) * 3, 1)
    assert snd_score(scattered) < snd_score(confident) - 0.3


def test_dev_density_ratio_matches_two_gaussians():
    # source N(0, I), target N(mu, I): p_t/p_s = exp(x.mu - |mu|^2 / 2), which a logistic domain
    # classifier can represent exactly.
    rng = np.random.default_rng(0)
    mu = np.array([1.0, -0.5])
    fs, ft = rng.normal(size=(4000, 2)), rng.normal(size=(4000, 2)) + mu
    fe = rng.normal(size=(500, 2))
    w = density_ratio(fs, ft, fe)
    true = np.exp(fe @ mu - mu @ mu / 2)
    assert np.corrcoef(np.log(w), np.log(true))[0, 1] > 0.99
    assert np.median(np.abs(np.log(w) - np.log(true))) < 0.15


def test_dev_risk_estimates_the_target_risk():
    # A loss that is high where the target lives: the plain source mean underestimates the target
    # risk; the importance-weighted risk (with its control variate) gets much closer.
    rng = np.random.default_rng(1)
    loss = lambda x: (x[:, 0] > 0.5).astype(float)  # noqa: E731
    fs, ft = rng.normal(size=(4000, 2)), rng.normal(size=(4000, 2)) + [1.0, 0.0]
    fv = rng.normal(size=(4000, 2))
    target_risk = loss(rng.normal(size=(200000, 2)) + [1.0, 0.0]).mean()
    w = density_ratio(fs, ft, fv)
    est = dev_risk(loss(fv), w)
    assert abs(est - target_risk) < abs(loss(fv).mean() - target_risk) / 4
    assert dev_risk(np.array([0.2, 0.4, 0.6]), np.ones(3)) == pytest.approx(0.4)  # w = 1: the plain mean


def test_reverse_validation_ranks_a_good_model_above_a_bad_one():
    # Four classes in feature space; the target is the source shifted a little.
    rng = np.random.default_rng(2)
    centres = rng.normal(scale=4, size=(4, 5))
    ys, yt = rng.integers(0, 4, 600), rng.integers(0, 4, 600)
    f_val = centres[ys] + rng.normal(size=(600, 5))
    f_tgt = centres[yt] + 0.7 + rng.normal(size=(600, 5))
    good = yt.copy()
    good[:60] = rng.integers(0, 4, 60)                 # 90% right
    bad = (yt + 1) % 4                                 # consistently wrong labels
    bad[::2] = rng.integers(0, 4, 300)
    rv_good = reverse_validation(f_tgt, good, f_val, ys)
    rv_bad = reverse_validation(f_tgt, bad, f_val, ys)
    assert rv_good > 0.85 and rv_bad < 0.4
    assert reverse_validation(f_tgt, np.zeros(600, int), f_val, ys) == pytest.approx((ys == 0).mean())


def test_evaluations_file_keeps_the_last_line_of_a_step_and_skips_a_torn_line(tmp_path):
    lines = [json.dumps(ev(1, 0.1)), json.dumps(ev(2, 0.2)), json.dumps(ev(2, 0.25)), '{"step": 3, "tgt']
    (tmp_path / EVALS_FILE).write_text("\n".join(lines))
    evals = read_evaluations(tmp_path)
    assert [(e["step"], e["tgt_acc"]) for e in evals] == [(1, 0.1), (2, 0.25)]
    assert read_evaluations(tmp_path / "nothing") == []


def test_unknown_selection_rule_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="selection='best' is unknown"):
        train(make_cfg(tmp_path / "r", "pair=moons", "selection=best"))


def npz(path, n, seed, shift=0):
    """``n`` 3-class 16x16 colour images: a bright square whose corner is the class (+ shift)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 60, (n, 16, 16, 3), dtype=np.uint8)
    y = np.arange(n) % 3
    for i, c in enumerate(y):
        x[i, 2 + 5 * c:7 + 5 * c, 2 + 5 * c:7 + 5 * c] = 200 - shift
    np.savez(path, x=x, y=y)
    return str(path)


def test_probe_logs_every_evaluation_and_rescore_reproduces_it(tmp_path):
    domains = {"sq_src": {"kind": "npz", "train": npz(tmp_path / "s.npz", 240, 0), "test_fraction": 0.25},
               "sq_tgt": {"kind": "npz", "train": npz(tmp_path / "t.npz", 240, 1, shift=80), "test_fraction": 0.25}}
    ov = [f"+domains.{k}={{{','.join(f'{a}:{b}' for a, b in v.items())}}}" for k, v in domains.items()]
    cfg = make_cfg(tmp_path / "run", *ov, "pair=mnist_mnistm", "pair.source=sq_src", "pair.target=sq_tgt", "pair.name=squares",
                   "pair.channels=3", "pair.image_size=32", "model=mnist", "method=dann", "data.batch_size=32",
                   "data.src_val=40", "trainer.max_steps=30", "trainer.val_check_interval=10",
                   "checkpoint.every_n_steps=10", "checkpoint.keep_all=true", "probe.samples=50",
                   "selection=src_val", f"data.root={tmp_path / 'root'}")
    rec = train(cfg)
    evals = read_evaluations(tmp_path / "run")
    assert [e["step"] for e in evals] == [10, 20, 30]
    for e in evals:
        assert all(math.isfinite(e[k]) for k in ("tgt_acc", "src_val_acc", "dev", "rv", "entropy", "im", "snd"))
    assert rec["selected"]["rule"] == "src_val" and rec["selected"]["oracle"] is False
    assert rec["selected"]["step"] == select(evals, "src_val").step
    assert rec["metrics"]["select/dev"] == pytest.approx(-evals[-1]["dev"])  # oriented: higher is better
    assert rec["metrics"]["select/reverse_validation"] == pytest.approx(evals[-1]["rv"])
    assert evals[-1]["tgt_acc"] == pytest.approx(rec["metrics"]["test/tgt_acc"])
    # the kept checkpoints, scored afterwards, give the same numbers
    assert main(["rescore", str(tmp_path / "run"), "--samples", "50"]) == 0  # dann-select rescore
    again = read_evaluations(tmp_path / "run")
    assert [e["step"] for e in again] == [10, 20, 30]
    for a, b in zip(evals, again):
        for k in ("tgt_acc", "src_val_acc", "src_val_loss", "entropy", "im", "snd", "rv"):
            assert a[k] == pytest.approx(b[k], abs=1e-4), k


def test_rescore_needs_kept_checkpoints(tmp_path):
    train(make_cfg(tmp_path / "run", "pair=moons", "trainer.max_steps=20", "trainer.val_check_interval=10"))
    with pytest.raises(FileNotFoundError, match="checkpoint.keep_all=true"):
        rescore(tmp_path / "run")


def test_objective_must_be_a_label_free_score(tmp_path):
    with pytest.raises(ConfigError, match="select/oracle.*not a value a run reports"):
        train(make_cfg(tmp_path / "r", "pair=moons", "objective=select/oracle"))
    with pytest.raises(ConfigError, match="select/dev"):
        train(make_cfg(tmp_path / "r", "pair=moons", "objective=select/nope"))


# -- dann-table --select and --selection-study on hand-written runs ---------------------------
def write_run(root, method, seed, evals):
    from dann.records import write_record

    d = root / f"{method}_s{seed}"
    write_record(d, {"pair": "mnist_mnistm", "method": method, "seed": seed, "status": "finished", "config": {},
                     "git_commit": None, "steps": evals[-1]["step"] if evals else 10,
                     "metrics": {"test/tgt_acc": evals[-1]["tgt_acc"] if evals else 0.5, "test/src_acc": 0.99},
                     "wall_time_s": 1.0})
    for e in evals:
        from dann.selection import append_evaluation

        append_evaluation(d, e)
    return d


@pytest.fixture
def study_runs(tmp_path):
    root = tmp_path / "runs"
    # seed s: EVALS with every target accuracy shifted by s/100
    for s in range(3):
        write_run(root, "dann", s, [{**e, "tgt_acc": e["tgt_acc"] + s / 100} for e in EVALS])
    write_run(root, "source_only", 0, [])  # no evaluations.jsonl
    return root


def test_table_select_rule_reports_the_picked_checkpoint(study_runs, capsys):
    from dann.report.cli import main as table

    assert table([str(study_runs), "--select", "src_val"]) == 0
    out = capsys.readouterr().out
    row = next(ln for ln in out.splitlines() if ln.startswith("| dann (src_val)"))
    assert ".5100 ± .0100 (3)" in row and "{oracle}" not in row  # picks at step 100: .50, .51, .52
    assert "no evaluations.jsonl" in out and "source_only_s0" in out  # skipped, with the reason
    assert table([str(study_runs), "--select", "oracle"]) == 0
    out = capsys.readouterr().out
    row = next(ln for ln in out.splitlines() if ln.startswith("| dann (oracle)"))
    assert ".8100 ± .0100 (3)" in row and row.rstrip(" |").endswith("{oracle}")
    assert "chose on target test labels" in out
    with pytest.raises(SystemExit):
        table([str(study_runs), "--select", "best"])


def test_selection_study_over_all_checkpoints_of_all_runs(study_runs, capsys, tmp_path):
    from dann.report.cli import main as table
    from dann.report.study import ORACLE_LABEL, build_study

    png, md = tmp_path / "study.png", tmp_path / "study.md"
    assert table([str(study_runs), "--selection-study", "--png", str(png), "--out", str(md)]) == 0
    out = capsys.readouterr().out
    assert png.stat().st_size > 5000 and md.read_text() == out
    rows = {ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[2:-1]]
            for ln in out.splitlines() if ln.startswith("| ") and not ln.startswith("| rule")}
    # 15 candidates (5 evaluations x 3 runs). src_val scores step 100 best in every run (.97); the
    # tie goes to the later... all three are at step 100: the later *step* wins ties, then the order of
    # the runs; each has target accuracy .50 + s/100, so the pick is one of .50/.51/.52
    wsp, top1, top5, regret, worst, n_ckpt, n_runs = rows["src_val"]
    assert top1 in (".5000", ".5100", ".5200") and (n_ckpt, n_runs) == ("15", "3")
    assert rows[ORACLE_LABEL][1] == ".8200" and rows[ORACLE_LABEL][3] == ".0000"  # the best checkpoint of all
    assert regret == f"{0.82 - float(top1):.4f}".replace("0.", ".")
    assert "oracle" not in rows and "last_k" in rows
    # last chooses no run: the mean of the runs' last evaluations (.65, .66, .67)
    assert rows["last"][1] == ".6600" and rows["last"][5:] == ["3", "3"]
    s = build_study([{**r, "_path": str(p)} for p in study_runs.rglob("results.json")
                     for r in [json.loads(p.read_text())]])
    assert s.tasks["mnist_mnistm", "dann"]["src_val"].wspearman < 0   # high src_val where accuracy is low
    assert any("source_only_s0" in w for w in s.without_evals)


def test_a_validator_is_one_function(tmp_path):
    """Registering one function adds its score to every evaluation and its rule to RULES."""
    import torch

    from dann.data import DomainPairDataModule
    from dann.models import build_nets
    from dann.methods.source_only import SourceOnly
    from dann.selection import VALIDATORS, evaluate, rule_of, validator

    @validator("max_prob", doc="highest mean top-1 probability on target (a test validator)")
    def max_prob(v):
        return float(v.tgt_probs.max(1).values.mean())

    try:
        dm = DomainPairDataModule("moons", "moons_rot35", root=tmp_path, batch_size=16, src_val=50)
        dm.setup("fit")
        model = SourceOnly(build_nets("shallow", (2,), 2), num_classes=2, max_steps=10)
        row = evaluate(model, dm, samples=100)
        assert 0.5 <= row["max_prob"] <= 1.0
        evals = [{"step": 10, "tgt_acc": 0.6, "max_prob": 0.7}, {"step": 20, "tgt_acc": 0.8, "max_prob": 0.9},
                 {"step": 30, "tgt_acc": 0.5, "max_prob": 0.8}]
        assert rule_of("max_prob").score == "max_prob"
        assert select(evals, "max_prob").step == 20
    finally:
        VALIDATORS.pop("max_prob", None)
        from dann.selection.rules import RULES as R
        R.pop("max_prob", None)
