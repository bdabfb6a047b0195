"""dann-table on hand-written records: means, stds, the paper's numbers, failures, oracle marks."""

from __future__ import annotations

import csv
import io
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from dann.report.paper import PAPER, PAIRS, gap_closed
from dann.records import write_record
from dann.report.cli import main
from dann.report.table import build_table

ACC = {  # (pair, method) -> target accuracy per seed
    ("mnist_mnistm", "source_only"): [0.55, 0.57, 0.56],
    ("mnist_mnistm", "dann"): [0.74, 0.78, 0.75],
    ("mnist_mnistm", "target_only"): [0.96, 0.95],
    ("mnist_mnistm", "sa"): [0.58, 0.60],
    ("svhn_mnist", "dann"): [0.70],
    ("moons", "dann"): [0.9, 0.95],
}
ORACLE = ("mnist_mnistm", "sa")  # these runs chose d on target test labels
ORACLE_ACC = [0.61, 0.63]  # ... and these are the same method's last-step runs


def rec(pair, method, seed, acc=None, status="finished", **kw):
    return {"pair": pair, "method": method, "seed": seed, "status": status, "config": {}, "git_commit": None,
            "steps": 10, "metrics": {} if acc is None else {"test/tgt_acc": acc, "test/src_acc": 0.99},
            "wall_time_s": 1.0, **kw}


@pytest.fixture
def runs(tmp_path) -> Path:
    root = tmp_path / "sweep"
    for (pair, method), accs in ACC.items():
        for seed, a in enumerate(accs):
            extra = {"selection": "oracle"} if (pair, method) == ORACLE else {}
            write_record(root / f"{pair}_{method}_s{seed}", rec(pair, method, seed, a, **extra))
    for seed, a in enumerate(ORACLE_ACC):
        write_record(root / f"sa_last_step_s{seed}", rec(*ORACLE, seed, a))
    write_record(root / "failed_run", rec("mnist_mnistm", "dann", 7, status="failed",
                                          error="FloatingPointError: loss is nan at step 3"))
    (root / "truncated_run").mkdir()
    (root / "truncated_run" / "results.json").write_text('{"pair": "mnist_mnistm", "meth')
    return root


def run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def table_rows(md: str) -> dict[str, list[str]]:
    lines = [ln for ln in md.splitlines() if ln.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for ln in lines[1:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        rows[cells[0]] = dict(zip(header[1:], cells[1:]))
    return header, rows


def f4(x: float) -> str:
    return f"{x:.4f}".lstrip("0")


def test_markdown_means_stds_paper_and_sections(runs, capsys):
    code, md, _ = run(capsys, runs)
    assert code == 0
    header, rows = table_rows(md)
    assert header == ["method", "mnist_mnistm", "svhn_mnist", "moons"]  # the paper's order, others last
    assert list(rows) == ["source_only", "sa", "sa (oracle)", "dann", "target_only"]
    for (pair, method), accs in [*ACC.items(), (ORACLE, ORACLE_ACC)]:
        row = f"{method} (oracle)" if (pair, method) == ORACLE and accs is not ORACLE_ACC else method
        cell = rows[row][pair]
        std = f4(statistics.stdev(accs)) if len(accs) > 1 else "—"
        assert cell.startswith(f"{f4(statistics.mean(accs))} ± {std} ({len(accs)})"), cell
        if pair in PAIRS:
            assert f"[paper {f4(PAPER[method][pair])}]" in cell
        else:
            assert "paper" not in cell
    # our gap closed, from our own means, beside the paper's printed one
    mean = lambda k: statistics.mean(ACC[k])  # noqa: E731
    so, to = mean(("mnist_mnistm", "source_only")), mean(("mnist_mnistm", "target_only"))
    g = 100 * (mean(("mnist_mnistm", "dann")) - so) / (to - so)
    assert f"gap {g:.1f}% [paper 52.9%]" in rows["dann"]["mnist_mnistm"]
    assert "gap" not in rows["dann"]["svhn_mnist"]  # no bounds on that pair
    # an empty cell is not dressed as a result: no paper number beside nothing
    assert rows["source_only"]["svhn_mnist"] == "no runs"
    # the failed run is listed, not averaged (its 3 seeds stay 3)
    assert "(3)" in rows["dann"]["mnist_mnistm"]
    failed = md[md.index("Failed or unfinished runs"):]
    assert "failed_run" in failed and "status failed" in failed and "loss is nan" in failed
    unreadable = md[md.index("Unreadable records"):]
    assert "truncated_run" in unreadable


def test_oracle_cells_are_marked(runs, capsys):
    _, md, _ = run(capsys, runs)
    _, rows = table_rows(md)
    assert rows["sa (oracle)"]["mnist_mnistm"].endswith("{oracle}")
    assert f"[paper {f4(PAPER['sa']['mnist_mnistm'])}]" in rows["sa (oracle)"]["mnist_mnistm"]
    assert sum("{oracle}" in c for r in rows.values() for c in r.values()) == 1  # never mixed with last-step runs
    note = next(ln for ln in md.splitlines() if ln.startswith("Model selection:"))
    assert "last step" in note and "except cells marked {oracle}" in note and note.endswith("sa (oracle) on mnist_mnistm: oracle.")


def test_latex_and_csv_parse(runs, capsys, tmp_path):
    code, tex, _ = run(capsys, runs, "--format", "latex", "--out", tmp_path / "t.tex")
    assert code == 0 and (tmp_path / "t.tex").read_text() == tex
    body = tex[tex.index(r"\begin{tabular}{llll}"):tex.index(r"\end{tabular}")]
    lines = [ln for ln in body.splitlines() if ln.endswith(r"\\")]
    assert len(lines) == 6 and all(ln.count("&") == 3 for ln in lines)  # header + 4 methods, 4 columns
    assert r"mnist\_mnistm" in tex and r"$\pm$" in tex and r"\{oracle\}" in tex
    assert not re.search(r"(?<!\\)[_#]", "\n".join(lines).replace(r"$\pm$", ""))  # specials escaped
    assert all(ln.startswith("%") for ln in tex[tex.index(r"\end{tabular}"):].splitlines()[1:])

    code, out, err = run(capsys, runs, "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == len(ACC) + 1
    by = {(r["pair"], r["method"]): r for r in rows}
    assert float(by[("mnist_mnistm", "sa")]["mean"]) == pytest.approx(statistics.mean(ORACLE_ACC))
    by[ORACLE] = by.pop(("mnist_mnistm", "sa (oracle)"))
    for k, accs in ACC.items():
        assert float(by[k]["mean"]) == pytest.approx(statistics.mean(accs), abs=1e-6)
        assert int(by[k]["n"]) == len(accs)
    assert by[ORACLE]["selection"] == "oracle" and by[("moons", "dann")]["selection"] == "last"
    assert float(by[("mnist_mnistm", "dann")]["paper"]) == PAPER["dann"]["mnist_mnistm"]
    assert "failed_run" in err and "truncated_run" in err  # caveats on stderr, CSV stays clean


def test_paper_gap_closed_matches_the_printed_percentages():
    """The paper's own numbers give its printed gaps (to 0.1), except MNIST->MNIST-M (see dann/paper.py)."""
    for pair, sa, dann in [("synnumbers_svhn", -5.5, 79.7), ("svhn_mnist", 9.9, 42.6), ("synsigns_gtsrb", 12.7, 46.4)]:
        so, to = PAPER["source_only"][pair], PAPER["target_only"][pair]
        assert gap_closed(PAPER["sa"][pair], so, to) == pytest.approx(sa, abs=0.1)
        assert gap_closed(PAPER["dann"][pair], so, to) == pytest.approx(dann, abs=0.1)


def test_png_is_written(runs, capsys, tmp_path):
    png = tmp_path / "fig" / "table.png"
    assert run(capsys, runs, "--png", png)[0] == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_other_metric_has_no_paper_column(runs, capsys):
    _, md, _ = run(capsys, runs, "--metric", "test/src_acc")
    _, rows = table_rows(md)
    assert rows["dann"]["mnist_mnistm"].startswith(".9900 ± .0000 (3)") and "paper" not in md.split("\n\n")[0]


def test_repeated_seeds_are_flagged(runs, capsys):
    write_record(runs / "rerun", rec("moons", "dann", 0, 0.5))
    _, md, _ = run(capsys, runs)
    assert "repeated seeds" in md and "dann on moons: seeds [0, 0, 1]" in md


def test_a_copied_record_counts_once(runs, capsys, tmp_path):
    """The same run reached twice (a copy kept beside another experiment's table, or overlapping
    folders on the command line) is one run: counted once and named, not a repeated seed."""
    copy = tmp_path / "elsewhere" / "moons_dann_s0"
    copy.mkdir(parents=True)
    copy.joinpath("results.json").write_bytes((runs / "moons_dann_s0" / "results.json").read_bytes())
    _, md, _ = run(capsys, runs, tmp_path / "elsewhere", runs / "moons_dann_s0")
    _, rows = table_rows(md)
    assert rows["dann"]["moons"].startswith(".9250 ± .0354 (2)")
    assert "repeated seeds" not in md
    assert "Records read more than once (the same run, counted once): 1" in md
    assert str(copy / "results.json") in md


def test_collapsed_runs_are_averaged_and_named(tmp_path, capsys):
    root = tmp_path / "sweep"
    write_record(root / "ok", rec("moons", "dann", 0, 0.9, collapsed_at_step=None))
    write_record(root / "bad", rec("moons", "dann", 1, 0.5, collapsed_at_step=1234))
    _, md, _ = run(capsys, root)
    _, rows = table_rows(md)
    assert rows["dann"]["moons"].startswith(".7000 ± ")  # last-step reporting keeps the run in the mean
    assert "collapsed to chance during training (averaged: their last step is what they produced): 1" in md
    assert "bad/results.json: at step 1234" in md and "ok/results.json: at step" not in md


def test_no_readable_records_is_an_error(tmp_path, capsys):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "results.json").write_text("{not json")
    code, out, err = run(capsys, tmp_path)
    assert code != 0 and out == ""
    assert "no readable run records" in err and "1 unreadable" in err


def test_module_entry_point_runs(runs):
    p = subprocess.run([sys.executable, "-m", "dann.report.cli", str(runs), "--format", "csv"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.startswith("pair,method,n,mean")
    p = subprocess.run([sys.executable, "-m", "dann.report.cli", str(runs / "nowhere")], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 2 and "does not exist" in p.stderr


# -- protocols: runs whose configs differ are not averaged together ---------------------------
def config(method, seed, max_steps=15000, pair="mnist_mnistm", **method_opts):
    """A resolved run config as train.py writes it (the keys that matter here)."""
    return {"seed": seed, "output_dir": f"/runs/{pair}_{method}_s{seed}", "resume": None, "objective": "test/src_acc",
            "deterministic": False, "domains": {},
            "data": {"root": f"/data{seed}", "batch_size": 128, "eval_batch_size": 1024, "src_val": 1000},
            "trainer": {"max_steps": max_steps, "accelerator": "gpu", "devices": 1, "val_check_interval": 1000},
            "optim": {"lr": 0.01, "momentum": 0.9, "anneal": True},
            "pair": {"name": pair, "source": "mnist", "target": "mnist_m", "fit": "pad"},
            "method": {"name": method, **method_opts},
            "logger": {"csv": True, "wandb": {"group": f"g{seed}", "tags": []}},
            "checkpoint": {"every_n_steps": 1000}, "pool": {"per_gpu": 1}}


def write_runs(root: Path, runs: dict[tuple, list[float]], pair="mnist_mnistm") -> Path:
    """``{(method, max_steps[, ((method option, value), ...)]): accuracies per seed}`` as records under ``root``."""
    for (method, steps, *opts), accs in runs.items():
        opts = dict(*opts)
        for seed, a in enumerate(accs):
            name = f"{pair}_{method}_{steps}_{'_'.join(map(str, opts.values()))}_s{seed}"
            write_record(root / name, rec(pair, method, seed, a, config=config(method, seed, steps, pair, **opts)))
    return root


def protocol_note(md: str) -> str:
    return next((ln for ln in md.splitlines() if ln.startswith("Runs of different protocols")), "")


LENGTHS = {  # (method, trainer.max_steps) -> accuracies per seed
    ("source_only", 8000): [0.50, 0.52], ("dann", 8000): [0.60, 0.64], ("target_only", 8000): [0.90, 0.92],
    ("source_only", 15000): [0.56, 0.58], ("dann", 15000): [0.76, 0.78], ("target_only", 15000): [0.96, 0.98],
}


def test_training_lengths_split_the_column(tmp_path, capsys):
    runs = write_runs(tmp_path, LENGTHS)
    _, md, _ = run(capsys, runs)
    header, rows = table_rows(md)
    cols = {8000: "mnist_mnistm [trainer.max_steps=8000]", 15000: "mnist_mnistm [trainer.max_steps=15000]"}
    assert header == ["method", cols[8000], cols[15000]]  # ordered by value, not as text
    for (method, steps), accs in LENGTHS.items():
        cell = rows[method][cols[steps]]
        assert cell.startswith(f"{f4(statistics.mean(accs))} ± {f4(statistics.stdev(accs))} (2)"), cell
        off = "" if steps == 15000 else f" at trainer.max_steps=15000; here {steps}"  # the paper's protocol: 15000
        assert f"[paper {f4(PAPER[method]['mnist_mnistm'])}{off}]" in cell  # the paper's number by the base pair
    assert protocol_note(md) == ("Runs of different protocols are not averaged: "
                                 "mnist_mnistm split by trainer.max_steps (8000, 15000).")


def test_gap_closed_uses_the_bounds_of_the_same_protocol(tmp_path, capsys):
    # no train-on-target bound at 8000 steps
    runs = write_runs(tmp_path, {k: a for k, a in LENGTHS.items() if k != ("target_only", 8000)})
    _, md, _ = run(capsys, runs)
    _, rows = table_rows(md)
    mean = lambda m: statistics.mean(LENGTHS[(m, 15000)])  # noqa: E731
    g = gap_closed(mean("dann"), mean("source_only"), mean("target_only"))
    assert f"gap {g:.1f}%" in rows["dann"]["mnist_mnistm [trainer.max_steps=15000]"]
    # the 8000-step column does not borrow the 15000-step bound, so it has no gap
    assert "gap" not in rows["dann"]["mnist_mnistm [trainer.max_steps=8000]"]
    assert rows["target_only"]["mnist_mnistm [trainer.max_steps=8000]"] == "no runs"


def test_ignored_keys_do_not_split(tmp_path, capsys):
    """Seed, output_dir, data.root, logger, hardware, threads, the extra validators scored and unused custom
    domains differ between these runs (threads and validator_modules are absent from records older than them)."""
    accs = [0.74, 0.78, 0.75]
    for seed, a in enumerate(accs):
        cfg = config("dann", seed, gamma=10.0)
        cfg["trainer"]["accelerator"] = ["gpu", "cpu", "mps"][seed]
        if seed:
            cfg.update(threads=["auto", 1][seed - 1], validator_modules=[[], ["mylab.validators"]][seed - 1])
        cfg["domains"] = {} if seed else {"my_photos": {"kind": "image_folder", "train": "/p"}}  # not this pair's
        write_record(tmp_path / f"s{seed}", rec("mnist_mnistm", "dann", seed, a, config=cfg))
    _, md, _ = run(capsys, tmp_path)
    header, rows = table_rows(md)
    assert header == ["method", "mnist_mnistm"] and list(rows) == ["dann"]
    assert rows["dann"]["mnist_mnistm"].startswith(f"{f4(statistics.mean(accs))} ± {f4(statistics.stdev(accs))} (3)")
    assert protocol_note(md) == ""


def test_a_used_custom_domain_splits(tmp_path, capsys):
    for seed, train in enumerate(["/a", "/b"]):
        cfg = config("dann", seed)
        cfg["pair"]["source"] = "mine"  # the pair's data comes from this definition
        cfg["domains"] = {"mine": {"kind": "npz", "train": train}}
        write_record(tmp_path / f"s{seed}", rec("mnist_mnistm", "dann", seed, 0.7, config=cfg))
    header, _ = table_rows(run(capsys, tmp_path)[1])
    assert header == ["method", "mnist_mnistm [domains.mine.train=/a]", "mnist_mnistm [domains.mine.train=/b]"]


def test_a_missing_key_splits_and_records_without_config_group_together(tmp_path, capsys):
    old = config("dann", 1)
    del old["trainer"]["max_steps"]  # e.g. a record written before the key existed
    write_record(tmp_path / "new", rec("mnist_mnistm", "dann", 0, 0.7, config=config("dann", 0)))
    write_record(tmp_path / "old", rec("mnist_mnistm", "dann", 1, 0.6, config=old))
    header, _ = table_rows(run(capsys, tmp_path)[1])
    assert header == ["method", "mnist_mnistm [trainer.max_steps=15000]", "mnist_mnistm [trainer.max_steps=—]"]

    no_config = rec("mnist_mnistm", "dann", 2, 0.5)
    del no_config["config"]
    t = build_table([rec("mnist_mnistm", "dann", 1, 0.6), no_config], [])  # config {} and no config: both empty
    assert t.pairs == ["mnist_mnistm"] and t.cells[("mnist_mnistm", "dann")].n == 2 and not t.splits


def test_a_key_added_later_reads_its_old_behaviour_in_records_without_it(tmp_path, capsys):
    """data.mean_of came after runs were recorded: a record without it is the default (pooled) and
    averages with new pooled runs; a run with another value splits, both values named."""
    new = config("dann", 1)
    new["data"]["mean_of"] = "pooled"
    other = config("dann", 2)
    other["data"]["mean_of"] = "source"
    for seed, cfg in [(0, config("dann", 0)), (1, new), (2, other)]:
        write_record(tmp_path / f"s{seed}", rec("mnist_mnistm", "dann", seed, 0.6 + seed / 100, config=cfg))
    header, rows = table_rows(run(capsys, tmp_path)[1])
    assert header == ["method", "mnist_mnistm [data.mean_of=pooled]", "mnist_mnistm [data.mean_of=source]"]
    assert rows["dann"][header[1]].startswith(".6050 ± .0071 (2)")
    assert rows["dann"][header[2]].startswith(".6200 ± — (1)")


def test_a_method_option_splits_only_that_methods_row(tmp_path, capsys):
    runs = write_runs(tmp_path, {
        ("source_only", 15000): [0.55, 0.57],
        ("sa", 15000, (("sa_dim", 20), ("sa_seed", 0))): [0.58, 0.60],
        ("sa", 15000, (("sa_dim", 50), ("sa_seed", 0))): [0.62, 0.66],
        ("dann", 15000, (("gamma", 10.0),)): [0.74, 0.78],
    })
    _, md, _ = run(capsys, runs)
    header, rows = table_rows(md)
    assert header == ["method", "mnist_mnistm"]  # methods' own options never split the column
    assert list(rows) == ["source_only", "sa [method.sa_dim=20]", "sa [method.sa_dim=50]", "dann"]
    assert rows["sa [method.sa_dim=20]"]["mnist_mnistm"].startswith(".5900 ± .0141 (2) [paper .5690]")
    assert rows["sa [method.sa_dim=50]"]["mnist_mnistm"].startswith(".6400 ± .0283 (2) [paper .5690]")
    assert rows["dann"]["mnist_mnistm"].startswith(".7600 ± .0283 (2)")
    assert protocol_note(md) == ("Runs of different protocols are not averaged: "
                                 "sa on mnist_mnistm split by method.sa_dim (20, 50).")


def test_a_method_split_in_one_column_names_its_setting_in_every_column(tmp_path, capsys):
    """ADDA split by its optimizer on one pair and run with SGD only on another: the other pair's cell
    sits on the SGD row, not on a third, unlabelled row that hides which optimizer it used."""
    write_runs(tmp_path, {("adda", 15000, (("optimizer", "sgd"),)): [0.56, 0.58],
                          ("adda", 15000, (("optimizer", "adam"),)): [0.76, 0.78]})
    write_runs(tmp_path, {("adda", 15000, (("optimizer", "sgd"),)): [0.74]}, pair="mnist_mnistm_regen")
    _, md, _ = run(capsys, tmp_path)
    header, rows = table_rows(md)
    assert header == ["method", "mnist_mnistm", "mnist_mnistm_regen"]
    assert list(rows) == ["adda [method.optimizer=adam]", "adda [method.optimizer=sgd]"]
    assert rows["adda [method.optimizer=sgd]"]["mnist_mnistm_regen"].startswith(".7400 ± — (1)")
    assert rows["adda [method.optimizer=adam]"]["mnist_mnistm_regen"] == "no runs"
    assert protocol_note(md) == ("Runs of different protocols are not averaged: "
                                 "adda on mnist_mnistm split by method.optimizer (adam, sgd).")


def test_split_columns_in_latex_csv_and_png(tmp_path, capsys):
    runs = write_runs(tmp_path / "runs", LENGTHS)
    write_runs(runs, {("dann", 8000): [0.5], ("dann", 15000): [0.7]}, pair="mnist_mnistm_regen")
    code, tex, _ = run(capsys, runs, "--format", "latex")
    body = tex[tex.index(r"\begin{tabular}{lllll}"):tex.index(r"\end{tabular}")]
    lines = [ln for ln in body.splitlines() if ln.endswith(r"\\")]
    assert code == 0 and len(lines) == 4 and all(ln.count("&") == 4 for ln in lines)
    assert r"mnist\_mnistm\_regen [trainer.max\_steps=15000]" in lines[0]
    assert "[paper* .7666]" in tex  # the stand-in's reference, for each of its split columns
    assert "% Runs of different protocols are not averaged: mnist_mnistm split by trainer.max_steps (8000, 15000); " \
           "mnist_mnistm_regen split by trainer.max_steps (8000, 15000)." in tex

    _, out, _ = run(capsys, runs, "--format", "csv")
    by = {(r["pair"], r["method"]): r for r in csv.DictReader(io.StringIO(out))}
    assert len(by) == len(LENGTHS) + 2
    for (method, steps), accs in LENGTHS.items():
        assert float(by[(f"mnist_mnistm [trainer.max_steps={steps}]", method)]["mean"]) == \
            pytest.approx(statistics.mean(accs), abs=1e-6)

    png = tmp_path / "t.png"
    assert run(capsys, runs, "--png", png)[0] == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_merge_averages_across_a_key_and_says_so(tmp_path, capsys):
    root = tmp_path / "m"
    for seed, (sv, acc) in enumerate([(1000, 0.70), (1000, 0.72), (None, 0.80)]):
        cfg = {"trainer": {"max_steps": 100}, "data": {"batch_size": 128, **({} if sv is None else {"src_val": sv})}}
        write_record(root / f"r{seed}", rec("mnist_mnistm", "dann", seed, acc, config=cfg))
    code, out, _ = run(capsys, root)
    assert code == 0 and "mnist_mnistm [data.src_val=1000]" in out and "split by data.src_val" in out
    code, out, _ = run(capsys, root, "--merge", "data.src_val")
    header, rows = table_rows(out)
    assert header[1:] == ["mnist_mnistm"] and rows["dann"]["mnist_mnistm"].startswith(".7400 ± ")
    assert "runs that differ in data.src_val ARE averaged together" in out


def test_curves_per_seed_mean_at_common_steps_and_runs_without_evaluations(tmp_path, capsys):
    import json

    from dann.report.table_figures import curves, mean_curve

    evals = {0: [(1000, 0.5), (2000, 0.6), (3000, 0.7)], 1: [(1000, 0.7), (2000, 0.8)]}  # seed 1 stopped early
    for seed, ev in evals.items():
        d = tmp_path / f"dann_s{seed}"
        write_record(d, rec("mnist_mnistm", "dann", seed, ev[-1][1]))
        (d / "evaluations.jsonl").write_text("".join(json.dumps({"step": s, "tgt_acc": a}) + "\n" for s, a in ev))
    write_record(tmp_path / "so_s0", rec("mnist_mnistm", "source_only", 0, 0.55))  # no evaluations.jsonl
    (tmp_path / "nan_s0").mkdir()
    write_record(tmp_path / "nan_s0", rec("mnist_mnistm", "target_only", 0, 0.96))
    (tmp_path / "nan_s0" / "evaluations.jsonl").write_text('{"step": 1000, "tgt_acc": null}\n')
    from dann.records import read_records

    t = build_table(*read_records(tmp_path))
    data, missing = curves(t)
    assert list(data) == [("mnist_mnistm", "dann")]
    assert [(c.seed, c.steps, c.accs) for c in data["mnist_mnistm", "dann"]] == \
        [(0, [1000, 2000, 3000], [0.5, 0.6, 0.7]), (1, [1000, 2000], [0.7, 0.8])]
    steps, mean = mean_curve(data["mnist_mnistm", "dann"])
    assert steps == [1000, 2000] and mean == pytest.approx([0.6, 0.7])
    assert len(missing) == 2 and any("source_only" in m for m in missing) and any("target_only" in m for m in missing)

    png = tmp_path / "curves.png"
    code, _, err = run(capsys, tmp_path, "--curves", png)
    assert code == 0 and png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
    assert "learning curves written" in err and err.count("no curve for") == 2


def test_curves_have_one_legend_outside_the_panels_naming_each_row_once(tmp_path, monkeypatch):
    """With a dozen rows a legend inside a panel hides the curves, and one legend per panel repeats
    them: one legend for the figure, right of the last panel, each row with curves once, in table order."""
    import json

    from dann.records import read_records
    from dann.report import table_figures

    for pair, methods in {"mnist_mnistm": ["cdan", "dann"], "mnist_mnistm_regen": ["dann", "source_only"]}.items():
        for m in methods:
            d = tmp_path / f"{m}_{pair}"
            write_record(d, rec(pair, m, 0, 0.6))
            (d / "evaluations.jsonl").write_text("".join(json.dumps({"step": s, "tgt_acc": 0.6}) + "\n"
                                                         for s in (1000, 2000)))
    figs = []
    real_save = table_figures.save_fig
    monkeypatch.setattr(table_figures, "save_fig", lambda fig, path: (figs.append(fig), real_save(fig, path))[1])
    table_figures.save_curves_png(build_table(*read_records(tmp_path)), tmp_path / "curves.png")
    (fig,) = figs
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    assert len(legends) == 1
    assert [t.get_text() for t in legends[0].get_texts()] == ["source_only", "dann", "cdan"]
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()  # the figure was closed after saving
    assert legends[0].get_window_extent(renderer).x0 >= max(ax.get_window_extent(renderer).x1 for ax in fig.axes)


def test_curves_without_any_evaluations_write_nothing_and_say_so(runs, capsys, tmp_path):
    png = tmp_path / "curves.png"
    code, _, err = run(capsys, runs, "--curves", png)
    assert code == 0 and not png.exists() and "no curves written" in err


def test_golden_the_committed_runs_give_the_committed_table():
    """The redesign changes no result: dann-table over the committed MNIST->MNIST-M records prints
    the committed table.md, digit for digit, with the plain command (no --merge)."""
    exp = Path(__file__).resolve().parent.parent / "experiments" / "paper_table"
    p = subprocess.run([sys.executable, "-m", "dann.report.cli", str(exp / "runs"), ],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout == (exp / "table.md").read_text()


def test_runs_of_one_seed_on_two_kinds_of_hardware_are_two_columns_not_repeated_seeds(tmp_path, capsys):
    for dev in ("cpu", "cuda:0"):
        for seed, acc in enumerate([0.70, 0.72]):
            write_record(tmp_path / f"{dev[:3]}_s{seed}",
                         rec("mnist_mnistm", "dann", seed, acc, config=config("dann", seed), device=dev))
    code, out, err = run(capsys, tmp_path)
    assert code == 0
    assert "mnist_mnistm [hardware=cpu]" in out and "mnist_mnistm [hardware=cuda]" in out
    assert "repeated seeds" not in out


def test_train_on_target_joins_the_column_whatever_its_source_hold_out(tmp_path, capsys):
    """Train-on-target trains on no source image: a run recorded before data.src_val existed is
    averaged with the others (and the table says so); source-only runs still split on it."""
    old = config("target_only", 0)
    del old["data"]["src_val"]
    write_record(tmp_path / "to0", rec("mnist_mnistm", "target_only", 0, 0.96, config=old))
    write_record(tmp_path / "to1", rec("mnist_mnistm", "target_only", 1, 0.97, config=config("target_only", 1)))
    write_record(tmp_path / "so0", rec("mnist_mnistm", "source_only", 0, 0.58, config=config("source_only", 0)))
    code, out, err = run(capsys, tmp_path)
    assert code == 0
    assert "| target_only | .9650 ± .0071 (2)" in out, out
    assert "[data.src_val" not in out and "does not train on: target_only" in out
    so_old = config("source_only", 1)
    del so_old["data"]["src_val"]
    write_record(tmp_path / "so1", rec("mnist_mnistm", "source_only", 1, 0.60, config=so_old))
    code, out, err = run(capsys, tmp_path)
    assert "mnist_mnistm [data.src_val=1000]" in out and "mnist_mnistm [data.src_val=—]" in out


def test_rows_are_the_paper_methods_then_the_others_then_the_upper_bound(runs, capsys):
    for m in ("mdd", "adda"):
        write_record(runs / f"{m}_s0", rec("mnist_mnistm", m, 0, 0.7))
    _, md, _ = run(capsys, runs)
    header, rows = table_rows(md)
    assert list(rows) == ["source_only", "sa", "sa (oracle)", "dann", "adda", "mdd", "target_only"], list(rows)


@pytest.mark.parametrize("n", [4, 10, 13])
def test_each_row_of_a_figure_has_its_own_colour(n):
    from dann.report.figures import pyplot
    from dann.report.table_figures import row_colours

    colours = row_colours(pyplot(), n)
    assert len({str(colours[i % len(colours)]) for i in range(n)}) == n


def test_the_methods_experiment_prints_every_row(capsys):
    """experiments/methods holds its own records and copies of the paper's four methods' (baselines/):
    `dann-table experiments/methods` alone gives the whole comparison, each run counted once, in one column
    (the runs of issue #32, recorded with keys the older runs lack, join the same protocol)."""
    root = Path(__file__).resolve().parents[1] / "experiments" / "methods"
    code, md, _ = run(capsys, root)
    assert code == 0
    header, rows = table_rows(md)
    methods = {label.split(" ")[0] for label in rows}
    twelve = {"source_only", "sa", "dann", "target_only", "dan", "coral", "cdan", "cdan_e", "mdd", "mcc", "mcd", "adda"}
    successors = {"vada", "dirt_t", "self_ensembling", "shot", "dann_bsp", "cdan_bsp", "afn", "bnm", "jan"}
    assert twelve <= methods <= twelve | successors, methods
    assert header == ["method", "mnist_mnistm", "mnist_mnistm_regen"]
    assert "repeated seeds" not in md


# -- the paper's protocol: a cell whose runs differ from it says so beside the paper's number -----
def test_a_cell_off_the_papers_protocol_says_so_beside_the_papers_number(tmp_path, capsys):
    """A 1,500-step cell beside the paper's .7666 (our runs of record: 15,000 steps, batch 128, the
    paper's network) names what differs where the paper's number is; a cell on the protocol does not."""
    write_runs(tmp_path, {("dann", 1500): [0.58, 0.60], ("dann", 15000): [0.76, 0.78]})
    _, md, _ = run(capsys, tmp_path)
    _, rows = table_rows(md)
    short, full = rows["dann"]["mnist_mnistm [trainer.max_steps=1500]"], rows["dann"]["mnist_mnistm [trainer.max_steps=15000]"]
    assert "[paper .7666 at trainer.max_steps=15000; here 1500]" in short, short
    assert "[paper .7666]" in full, full
    assert any(ln.startswith("[paper x at key=value; here y]") for ln in md.splitlines()), md


def test_batch_and_network_off_the_papers_protocol_are_named_too(tmp_path, capsys):
    cfg = config("dann", 0)
    cfg["data"]["batch_size"] = 64
    cfg["model"] = {"arch": "mnist", "hidden": 7}  # a key the paper's network has not
    write_record(tmp_path / "s0", rec("mnist_mnistm", "dann", 0, 0.7, config=cfg))
    ok = config("dann", 1)
    ok["model"] = {"arch": "mnist"}
    write_record(tmp_path / "regen", rec("mnist_mnistm_regen", "dann", 1, 0.7, config=ok))
    _, md, _ = run(capsys, tmp_path)
    _, rows = table_rows(md)
    assert ("[paper .7666 at data.batch_size=128, model.hidden=—; here 64, 7]"
            in rows["dann"]["mnist_mnistm"]), rows
    assert "[paper* .7666]" in rows["dann"]["mnist_mnistm_regen"]  # a stand-in meets its reference's protocol
    code, out, _ = run(capsys, tmp_path, "--format", "csv")
    by = {r["pair"]: r for r in csv.DictReader(io.StringIO(out))}
    assert by["mnist_mnistm"]["off_paper_protocol"] == "data.batch_size=64 (paper 128); model.hidden=7 (paper —)"
    assert by["mnist_mnistm_regen"]["off_paper_protocol"] == ""


def test_merged_lengths_name_every_length_of_the_cell(tmp_path, capsys):
    write_runs(tmp_path, {("dann", 1500): [0.58], ("dann", 15000): [0.76]})
    _, md, _ = run(capsys, tmp_path, "--merge", "trainer.max_steps")
    _, rows = table_rows(md)
    assert "[paper .7666 at trainer.max_steps=15000; here 1500/15000]" in rows["dann"]["mnist_mnistm"]


@pytest.mark.parametrize("pair", PAIRS)
def test_the_papers_protocol_is_what_the_pairs_config_runs(pair):
    """dann.report.paper.PROTOCOL (what the table compares runs with) agrees with conf/: the pair's
    default length, batch and every key of its network."""
    from hydra import compose, initialize_config_dir

    from dann.config import CONF_DIR
    from dann.report.paper import PROTOCOL
    from dann.report.table import flatten

    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"pair={pair}"])
    from omegaconf import OmegaConf

    flat = flatten(OmegaConf.to_container(cfg, resolve=False))
    expected = {k: v for k, v in flat.items() if k.startswith("model.")}
    expected |= {k: flat[k] for k in ("trainer.max_steps", "data.batch_size")}
    assert PROTOCOL[pair] == expected


def test_the_bar_chart_marks_a_paper_bar_beside_runs_of_another_protocol(tmp_path, monkeypatch):
    from dann.records import read_records
    from dann.report import table_figures

    write_runs(tmp_path, {("dann", 1500): [0.58], ("dann", 15000): [0.76]})
    figs = []
    real_save = table_figures.save_fig
    monkeypatch.setattr(table_figures, "save_fig", lambda fig, path: (figs.append(fig), real_save(fig, path))[1])
    table_figures.save_png(build_table(*read_records(tmp_path)), tmp_path / "t.png")
    (fig,) = figs
    (ax,) = fig.axes
    marks = [x.get_position()[0] for x in ax.texts if x.get_text() == table_figures.OFF_PROTOCOL]
    assert len(marks) == 1 and marks[0] < 0.5  # over the 1,500-step column's paper bar only (the first column)
    assert "not on the\npaper's protocol" in ax.get_legend().get_title().get_text()


def test_curve_panels_of_one_length_share_their_x_axis_and_count_runs_in_english(tmp_path, monkeypatch):
    """Two columns of 2,000 steps evaluated at different steps get the same x-axis, from step 0; a
    cell of one run is '1 run per row', not '1 runs'."""
    import json

    from dann.records import read_records
    from dann.report import table_figures

    for pair, steps in {"mnist_mnistm": (1000, 2000), "mnist_mnistm_regen": (500, 1000, 1500, 2000)}.items():
        d = tmp_path / f"dann_{pair}"
        write_record(d, rec(pair, "dann", 0, 0.6))
        (d / "evaluations.jsonl").write_text("".join(json.dumps({"step": s, "tgt_acc": 0.6}) + "\n" for s in steps))
    figs = []
    real_save = table_figures.save_fig
    monkeypatch.setattr(table_figures, "save_fig", lambda fig, path: (figs.append(fig), real_save(fig, path))[1])
    table_figures.save_curves_png(build_table(*read_records(tmp_path)), tmp_path / "curves.png")
    (fig,) = figs
    lims = [tuple(round(v) for v in ax.get_xlim()) for ax in fig.axes]
    assert len(set(lims)) == 1 and lims[0][0] == 0, lims
    assert all(ax.get_title().endswith("(1 run per row)") for ax in fig.axes), [ax.get_title() for ax in fig.axes]
