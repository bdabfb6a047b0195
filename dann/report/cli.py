"""``dann-table RUN_DIRS...``: finished runs -> the paper's table (markdown, LaTeX, CSV, PNG, curves)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from dann.records import atomic_write_text, read_records, runs_without_record
from dann.report.render import RENDER, notes
from dann.report.table import DEFAULT_METRIC, build_table
from dann.report.table_figures import save_curves_png, save_png


def main(argv: Sequence[str] | None = None) -> int:
    """``dann-table``; returns the exit status: 0, or 2 with one ``dann-table: error:`` line."""
    try:
        return table(argv)
    except OSError as e:  # an --out, --png or --curves that cannot be written (read-only, full), named
        print(f"dann-table: error: {e}", file=sys.stderr)
        return 2


def table(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="dann-table", description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dirs", nargs="*", help="folders searched recursively for results.json (or such files)")
    ap.add_argument("--wandb", metavar="ENTITY/PROJECT", help="read the runs from the W&B API instead")
    ap.add_argument("--group", help="with --wandb: only this group (the experiment or sweep)")
    ap.add_argument("--wandb-dir", help="read offline W&B runs (**/offline-run-*) under this folder instead")
    ap.add_argument("--format", choices=sorted(RENDER), default="markdown")
    ap.add_argument("--out", help="also write the table to this file")
    ap.add_argument("--png", help="write a grouped bar chart (ours vs the paper's) to this file")
    ap.add_argument("--curves", metavar="PNG", help="write every cell's learning curves (target test accuracy at "
                    "each evaluation, per seed and their mean) to this file")
    ap.add_argument("--metric", default=DEFAULT_METRIC, help=f"metric to tabulate (default {DEFAULT_METRIC})")
    ap.add_argument("--select", metavar="RULE", help="report the checkpoint a model-selection rule picks from "
                    "each run's evaluations.jsonl: last, last_k, src_val, reverse_validation, dev, entropy, im, "
                    "snd, oracle (reads target labels; marked so)")
    ap.add_argument("--merge", metavar="KEY", action="append", default=[],
                    help="average runs that differ in this config key (e.g. data.src_val) instead of splitting "
                         "the column; the note under the table says so. Repeatable")
    ap.add_argument("--selection-study", action="store_true", help="compare every selection rule instead: over "
                    "all checkpoints of all runs of each method, weighted Spearman, top-1/top-5 target accuracy, "
                    "regret against the oracle, worst pick (markdown; --out, --png: score against accuracy per rule)")
    ap.add_argument("--choose-validator", metavar="PAIR", help="with --selection-study: choose the label-free rule "
                    "with the lowest regret pooled over the methods on PAIR, to apply to another pair; written to "
                    "--choice-out. Reading PAIR's target labels, the choice is an oracle on PAIR itself")
    ap.add_argument("--choice-out", metavar="JSON", help="where --choose-validator writes its choice")
    ap.add_argument("--tuned", metavar="RULE|CHOICE.json", help="for hyper-parameter searches (hparams_search=tune): "
                    "the trial and step the rule (or the validator of a --choose-validator file) picks per method, "
                    "with the overrides to re-run it, beside the oracle's pick; a choice applied to the pair it was "
                    "chosen on is labelled oracle")
    ap.add_argument("--tuned-out", metavar="JSON", help="with --tuned: also write the picks as JSON")
    ap.add_argument("--tuning-record", nargs=3, metavar=("PICKS", "FINALS", "CHOICE"),
                    help="the tuning study's table of record: the runs given (the default recipe's) beside the "
                         "full-protocol re-runs of the picks (FINALS/label_free, FINALS/oracle) of PICKS "
                         "(--tuned-out) under the validator of CHOICE (refused on the pair it was chosen on)")
    ap.add_argument("--validators", metavar="MODULE", action="append", default=[],
                    help="import this module's @validator functions first (repeatable; dann-train's validator_modules)")
    a = ap.parse_args(argv)
    if a.validators:
        from dann.selection import import_validators

        try:
            import_validators(a.validators)
        except ValueError as e:
            ap.error(str(e))
    if a.choose_validator and not (a.selection_study and a.choice_out):
        ap.error("--choose-validator PAIR needs --selection-study and --choice-out FILE")
    if a.select:
        from dann.selection import rule_of

        try:
            rule_of(a.select)
        except ValueError as e:
            ap.error(str(e))
        if a.metric != DEFAULT_METRIC:
            ap.error("--select picks a checkpoint by its target accuracy; it cannot be combined with --metric")
    for d in a.run_dirs:
        if not Path(d).exists():
            print(f"dann-table: warning: {d} does not exist", file=sys.stderr)
    if a.wandb:
        from dann.report.wandb_offline import api_records

        records, bad = api_records(a.wandb, a.group)
    elif a.wandb_dir:
        from dann.report.wandb_offline import offline_records

        records, bad = offline_records(a.wandb_dir)
    elif a.run_dirs:
        records, bad = read_records(*a.run_dirs)
    else:
        ap.error("give run folders, --wandb ENTITY/PROJECT or --wandb-dir DIR")
    unrecorded = [] if a.wandb or a.wandb_dir else runs_without_record(*a.run_dirs)
    if not records:
        why = f"; {len(bad)} unreadable: " + "; ".join(f"{p}: {w}" for p, w in bad) if bad else ""
        if unrecorded:
            why += f"; {len(unrecorded)} run folder(s) without a record (running, or killed): " + \
                   "; ".join(map(str, unrecorded))
        src = a.wandb or a.wandb_dir or " ".join(a.run_dirs)
        print(f"dann-table: error: no readable run records in {src}{why}", file=sys.stderr)
        return 2
    if a.selection_study:
        return selection_study(records, a.out, a.png, a.choose_validator, a.choice_out)
    if a.tuning_record:
        import json

        from dann.report.study import read_choice
        from dann.report.tuning import record_table

        picks, finals, choice = a.tuning_record
        try:
            text = record_table(records, read_records(Path(finals) / "label_free")[0],
                                read_records(Path(finals) / "oracle")[0], json.loads(Path(picks).read_text()),
                                read_choice(choice))
        except (ValueError, OSError) as e:
            print(f"dann-table: error: --tuning-record: {e}", file=sys.stderr)
            return 2
        print(text, end="")
        if a.out:
            atomic_write_text(Path(a.out), text)
        return 0
    if a.tuned:
        import json

        from dann.report.tuning import tuned

        try:
            text, rows = tuned(records, a.tuned)
        except ValueError as e:
            print(f"dann-table: error: --tuned {a.tuned}: {e}", file=sys.stderr)
            return 2
        print(text, end="")
        if a.out:
            atomic_write_text(Path(a.out), text)
        if a.tuned_out:
            atomic_write_text(Path(a.tuned_out), json.dumps(rows, indent=2) + "\n")
        return 0
    t = build_table(records, bad, a.metric, a.select, a.merge)
    t.unrecorded = unrecorded
    text = RENDER[a.format](t)
    print(text, end="")
    if a.format == "csv":  # keep stdout machine-readable; the caveats still reach the reader
        print("\n".join(notes(t)), file=sys.stderr)
    if a.out:
        atomic_write_text(Path(a.out), text)
    if a.png:
        if not t.cells:
            print("dann-table: warning: no finished run to draw; no PNG written", file=sys.stderr)
        else:
            print(f"dann-table: bar chart written to {save_png(t, a.png)}", file=sys.stderr)
    if a.curves:
        png, missing = save_curves_png(t, a.curves)
        for m in missing:
            print(f"dann-table: warning: no curve for {m}", file=sys.stderr)
        print(f"dann-table: learning curves written to {png}" if png else
              "dann-table: warning: no averaged run has an evaluations.jsonl; no curves written", file=sys.stderr)
    return 0


def selection_study(records: list[dict[str, Any]], out: str | None, png: str | None, choose: str | None = None,
                    choice_out: str | None = None) -> int:
    """``--selection-study``: print (and write) the study of every rule over the runs' evaluations;
    with ``choose``, write the validator chosen on that pair to ``choice_out``."""
    import json

    from dann.report import study

    s = study.build_study(records)
    if not s.tasks:
        print("dann-table: error: no finished run has an evaluations.jsonl (train with probe.enabled=true, or "
              "`dann-select rescore RUN` on runs trained with checkpoint.keep_all=true)", file=sys.stderr)
        return 2
    text = study.render_markdown(s)
    print(text, end="")
    if out:
        atomic_write_text(Path(out), text)
    if png:
        print(f"dann-table: selection study chart written to {study.save_png(s, png)}", file=sys.stderr)
    if choose:
        try:
            choice = study.choose_validator(s, choose)
        except ValueError as e:
            print(f"dann-table: error: --choose-validator: {e}", file=sys.stderr)
            return 2
        atomic_write_text(Path(choice_out), json.dumps(choice, indent=2) + "\n")
        print(f"dann-table: validator chosen on {choose}: {choice['validator']} -> {choice_out} (label-free on "
              f"any other pair; an oracle on {choose})", file=sys.stderr)
    return 0


def cli() -> None:
    """Console entry point ``dann-table``."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
