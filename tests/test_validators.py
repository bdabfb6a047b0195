"""The validators the field uses now, each on a constructed case with a known answer; the weighted
Spearman correlation against a hand computation; the honest protocol; a validator from config."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from dann.report.study import check_honest, choose_validator, read_choice, weighted_spearman
from dann.selection import (bnm_score, class_ami, devn_score, dev_risk, ensv_scores, iwcv_score, mano_score,
                            mixval_score)
from dann.selection.scores import mix_pairs

ROOT = Path(__file__).resolve().parent.parent
G = torch.Generator().manual_seed(0)


def test_bnm_prefers_confident_and_class_balanced_predictions():
    balanced = torch.eye(4).repeat(25, 1)                         # one-hot, all four classes
    collapsed = torch.zeros(100, 4)
    collapsed[:, 0] = 1                                           # one-hot, one class
    unsure = torch.full((100, 4), 0.25)
    assert bnm_score(balanced) == pytest.approx(4 * 5 / 100)     # singular values sqrt(25) each, four of them
    assert bnm_score(balanced) > bnm_score(collapsed) > bnm_score(unsure) - 1e-9
    assert bnm_score(collapsed) == pytest.approx(10 / 100)      # one singular value sqrt(100)


def test_class_ami_is_one_when_the_predictions_are_the_clusters():
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=10, size=(3, 8))
    y = rng.integers(0, 3, 300)
    f = centres[y] + rng.normal(size=(300, 8))
    assert class_ami(f, y, 3) == pytest.approx(1.0)
    assert abs(class_ami(f, rng.integers(0, 3, 300), 3)) < 0.05   # predictions unrelated to the clusters


def test_mixval_is_near_one_for_a_model_that_follows_the_larger_part():
    # a "model" on 1-d inputs: x is the class index as a number; on a mix it answers the class of
    # the larger weight, which a linear mix of class codes keeps when lambda > 0.5 and codes are one-hot
    k = 5
    pred = torch.arange(200) % k
    a, b, same = mix_pairs(pred, 50, seed=0)
    assert same.sum() == 50 and (~same).sum() == 50
    assert (pred[a][same] == pred[b][same]).all() and (pred[a][~same] != pred[b][~same]).all()
    codes = torch.eye(k)[pred]
    mixed = (0.55 * codes[a] + 0.45 * codes[b]).argmax(1)           # follows the larger weight
    assert mixval_score(mixed, pred[a], same) == pytest.approx(1.0)
    assert mixval_score(pred[b], pred[a], same) == pytest.approx(0.5)  # follows the smaller: inter all wrong
    assert math.isnan(mixval_score(mixed[same], pred[a][same], same[same]))  # no inter pair: undefined


def test_ensv_ranks_a_checkpoint_that_agrees_with_the_majority_above_one_that_does_not():
    y = torch.arange(100) % 4
    onehot = torch.eye(4)[y]
    noisy = [onehot.clone() for _ in range(4)]
    for i, p in enumerate(noisy):
        p[i * 10:(i + 1) * 10] = torch.eye(4)[(y[i * 10:(i + 1) * 10] + 1) % 4]   # each wrong on its own tenth
    odd = torch.eye(4)[(y + 1) % 4]                                               # disagrees everywhere
    scores = ensv_scores([*noisy, odd])
    assert all(s == pytest.approx(0.9) for s in scores[:4]) and scores[4] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="same samples"):
        ensv_scores([onehot, onehot[:50]])


def test_iwcv_and_devn_weight_the_source_losses_towards_the_target():
    losses = np.array([0.0, 0.0, 1.0, 1.0])
    assert iwcv_score(losses, np.ones(4)) == pytest.approx(-0.5)             # w = 1: minus the plain mean
    assert iwcv_score(losses, np.array([0.1, 0.1, 1.9, 1.9])) == pytest.approx(-0.95)  # target-like = lossy
    w = np.array([0.5, 1.0, 2.0, 4.0])
    assert devn_score(losses, w) == pytest.approx(-dev_risk(losses, w / 4.0))
    assert devn_score(losses, 10 * w) == pytest.approx(devn_score(losses, w))  # invariant to the weights' scale


def test_mano_prefers_confident_logits_and_switches_normalisation_on_uncertainty():
    confident = torch.eye(4).repeat(25, 1) * 20.0       # softmax branch: near one-hot rows
    unsure = torch.randn(100, 4, generator=G) * 0.1     # Taylor branch
    assert mano_score(confident) == pytest.approx((1 / 4) ** (1 / 4), rel=1e-3)  # one-hot P: (N / NK)^(1/4)
    assert mano_score(confident) > mano_score(unsure)
    assert 0 < mano_score(unsure) < 1


def test_weighted_spearman_against_a_hand_computation():
    score = [0.1, 0.4, 0.2, 0.3]
    acc = [0.5, 0.9, 0.7, 0.6]
    # ranks: score 1,4,2,3; acc 1,4,3,2; weights (rank/4)^2 = 1/16, 1, 4/16, 9/16
    rx, ry, w = np.array([1, 4, 2, 3.]), np.array([1, 4, 3, 2.]), np.array([1, 16, 4, 9]) / 16
    mx, my = (w * rx).sum() / w.sum(), (w * ry).sum() / w.sum()
    cov = (w * (rx - mx) * (ry - my)).sum()
    hand = cov / math.sqrt((w * (rx - mx) ** 2).sum() * (w * (ry - my) ** 2).sum())
    assert weighted_spearman(score, acc) == pytest.approx(hand)
    assert weighted_spearman(score, acc, power=0) == pytest.approx(0.8)          # plain Spearman: 1 - 6*2/60
    assert weighted_spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(weighted_spearman([1, 1, 1], [1, 2, 3]))


def _study(pairs):
    from dann.report.study import RuleResult, Study

    pooled = {p: {n: RuleResult(n, regret=r, wspearman=0.1, top1=0.7) for n, r in rules.items()}
              for p, rules in pairs.items()}
    return Study({(p, "dann"): {} for p in pairs}, pooled, {}, [])


def test_the_validator_is_chosen_on_one_pair_and_is_an_oracle_there(tmp_path):
    s = _study({"mnist_mnistm_regen": {"src_val": 0.05, "im": 0.02, "oracle": 0.0, "last": 0.0},
                "mnist_mnistm": {"src_val": 0.0, "im": 0.1, "oracle": 0.0}})
    c = choose_validator(s, "mnist_mnistm_regen")
    assert c["validator"] == "im" and c["chosen_on"] == "mnist_mnistm_regen"   # not the oracle, not last
    path = tmp_path / "choice.json"
    path.write_text(json.dumps(c))
    assert read_choice(path)["validator"] == "im"
    assert check_honest(c, "mnist_mnistm") and not check_honest(c, "mnist_mnistm_regen")
    path.write_text(json.dumps({"validator": "best_guess", "chosen_on": "x"}))
    with pytest.raises(ValueError, match="unknown selection rule"):
        read_choice(path)


VALIDATOR_PY = '''
from dann.selection import Views, validator


@validator("max_prob", doc="highest mean top-1 target probability (a validator of one's own)")
def max_prob(v: Views) -> float:
    return float(v.tgt_probs.max(1).values.mean())
'''


@pytest.mark.slow
def test_a_validator_outside_the_repository_loads_from_config_everywhere(tmp_path):
    """train (selection=max_prob), the table (--select), the study and rescore agree on the rule."""
    pkg = tmp_path / "plugins" / "mylab"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "validators.py").write_text(textwrap.dedent(VALIDATOR_PY))
    env = {"PYTHONPATH": f"{tmp_path / 'plugins'}:{ROOT}", "WANDB_MODE": "offline", "PATH": "/usr/bin:/bin"}
    run = tmp_path / "runs" / "r"
    common = [sys.executable, "-m", "dann.run.train", "pair=moons", "logger=csv", "trainer.enable_progress_bar=false",
              "trainer.max_steps=40", "trainer.val_check_interval=10", "checkpoint.keep_all=true",
              "checkpoint.every_n_steps=10", f"hydra.run.dir={run}"]
    p = subprocess.run([*common, "validator_modules=[mylab.validators]", "selection=max_prob"], capture_output=True,
                       text=True, env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    rec = json.loads((run / "results.json").read_text())
    assert rec["selected"]["rule"] == "max_prob"
    rows = [json.loads(x) for x in (run / "evaluations.jsonl").read_text().splitlines()]
    assert all(0.5 <= r["max_prob"] <= 1 for r in rows)
    # without the module, the same selection is refused by name
    q = subprocess.run([*common[:-1], f"hydra.run.dir={tmp_path / 'other'}", "selection=max_prob"],
                       capture_output=True, text=True, env=env, cwd=tmp_path)
    assert q.returncode == 2 and "selection='max_prob' is unknown" in q.stderr
    table = [sys.executable, "-m", "dann.report.cli", str(tmp_path / "runs"), "--validators", "mylab.validators"]
    t = subprocess.run([*table, "--select", "max_prob"], capture_output=True, text=True, env=env)
    assert t.returncode == 0 and "(max_prob)" in t.stdout, t.stderr
    st = subprocess.run([*table, "--selection-study"], capture_output=True, text=True, env=env)
    assert st.returncode == 0 and "| max_prob |" in st.stdout, st.stderr
    r = subprocess.run([sys.executable, "-m", "dann.run.rescore", "rescore", str(tmp_path / "runs"), "--samples",
                        "50", "--validators", "mylab.validators"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert all("max_prob" in json.loads(x) for x in (run / "evaluations.jsonl").read_text().splitlines())
