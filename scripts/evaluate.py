#!/usr/bin/env python
"""Evaluate finished runs' networks on other domains (or their own), one table.

    python scripts/evaluate.py RUN_DIR [RUN_DIR ...] --domain NAME [NAME ...] [--split test|train|all]
                               [--root DATA_DIR] [--out table.md]

Each RUN_DIR holds results.json and checkpoints/last.ckpt. Each domain's images are converted
as the run's pair converts its own (channels, size, pad or resize) and the run's mean is
subtracted, so a domain the network never saw is fed exactly like its test set. Examples: is a
generated source like the real one (a network trained on the generator, evaluated on the real
domain's sample), does a model adapted to one target transfer to a third. Naming the run's own
target domain reproduces its recorded target test accuracy.

Custom domains are those declared in the run's config. SA runs are refused: their aligned
classifier belongs to their target's subspace (evaluate the source-only run they sit on).
The data root is --root, else $DANN_DATA_DIR, else ~/.cache/dann (never the record's own
``data.root``: a run folder is data, checked before use, see dann.run.build.load_run). Every
refusal is one line, ``evaluate: error: ...``, and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dann.install import require_torch_pair
from dann.report.render import md


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--domain", nargs="+", required=True, help="registered domain names (dann-data list)")
    ap.add_argument("--split", default="test", choices=("test", "train", "all"),
                    help="all: train and test together (a domain the network never trained on)")
    ap.add_argument("--root", type=Path, help="data root holding the domains (default: the run's data.root)")
    ap.add_argument("--out", type=Path, help="also write the markdown table here")
    a = ap.parse_args(argv)
    require_torch_pair("evaluate.py")  # before torchvision is imported: one line if it cannot be
    from dann.run.build import RECEIVED_ERRORS, domain_split, load_run, run_record
    from dann.selection import accuracy
    head = ["run", "method", "seed", "pair", "recorded tgt acc"] + [f"{d} ({a.split})" for d in a.domain]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in a.runs:
        try:
            rec = run_record(run)
            if rec["method"] == "sa":  # refused before any data is loaded
                raise ValueError("an SA run's aligned classifier belongs to its target's subspace; "
                                 "evaluate the source-only run it was fitted on instead")
            rec, dm, model = load_run(run, a.root, rec)
            cells = []
            for d in a.domain:
                s = domain_split(dm, d, a.split)
                cells.append(f"{accuracy(model, s):.4f} (n={len(s):,})")
        except RECEIVED_ERRORS as e:
            print(f"evaluate: error: {run}: {e.args[0] if e.args else e}", file=sys.stderr)
            return 2
        rec_acc = rec.get("metrics", {}).get("test/tgt_acc")
        lines.append("| " + " | ".join(map(md, [run.name, rec["method"], rec["seed"],
                                                 f"{rec.get('source')} -> {rec.get('target')}",
                                                 "n/a" if rec_acc is None else f"{rec_acc:.4f}", *cells])) + " |")
        print(f"evaluate: {run} done", file=sys.stderr, flush=True)
    table = "\n".join(lines) + "\n"
    print(table, end="")
    if a.out:
        try:
            a.out.write_text(table)
        except OSError as e:
            print(f"evaluate: error: --out {a.out}: cannot write it ({e.strerror}); give a writable path",
                  file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
