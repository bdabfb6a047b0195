"""``dann-table RUN_DIRS...``: finished runs as the paper's table (Ganin et al. 2016, Table 2).

Every ``results.json`` under the given folders is read (:func:`dann.results.read_records`)
and grouped by (pair, method); runs chosen by another rule than the last step (e.g.
SA's ``oracle``) form their own row, ``sa (oracle)``, so rules are never averaged together. A cell is ``mean ± std (n)`` over seeds (sample std, ddof=1),
with the paper's number beside it, and for methods other than the two bounds the paper's
"gap closed", ``100 (acc - source_only) / (target_only - source_only)``, computed from our
own source-only and train-on-target means of that pair. Runs whose status is not
"finished" are listed as failed, unreadable records with their reason: neither is averaged.
Each record's model-selection rule is its ``selection`` ("last_step" when absent); cells of
runs selected otherwise (on target labels: ``oracle``) are marked ``{oracle}``.
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from dann.paper import METHODS as PAPER_METHODS
from dann.paper import PAIRS as PAPER_PAIRS
from dann.paper import PAPER_GAP, STAND_INS, gap_closed, paper_value
from dann.results import atomic_write_text, read_records

DEFAULT_METRIC = "test/tgt_acc"
DEFAULT_SELECTION = "last_step"
BOUNDS = ("source_only", "target_only")


@dataclass
class Cell:
    """The runs of one (pair, method)."""

    values: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    selections: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if self.n > 1 else None

    @property
    def selection(self) -> str:
        """The rules used, e.g. "last_step" or "oracle" or "last_step+oracle" (mixed)."""
        return "+".join(sorted(set(self.selections)))

    @property
    def oracle(self) -> bool:
        return any(s != DEFAULT_SELECTION for s in self.selections)


@dataclass
class Table:
    metric: str
    cells: dict[tuple[str, str], Cell]
    failed: list[dict[str, Any]]
    unreadable: list[tuple[Path, str]]
    skipped: list[tuple[str, str]]  # finished records without the metric: (path, why)

    @property
    def pairs(self) -> list[str]:
        """The paper's pairs in its order (each stand-in right after its reference), then the rest."""
        have = {p for p, _ in self.cells}
        order = []
        for p in PAPER_PAIRS:
            order += [p] + sorted(q for q, ref in STAND_INS.items() if ref == p)
        return [p for p in order if p in have] + sorted(have - set(order))

    @property
    def methods(self) -> list[str]:
        """Rows: the paper's methods in its order, each followed by its other-selection rows, then the rest."""
        rank = {m: i for i, m in enumerate(PAPER_METHODS)}
        return sorted({m for _, m in self.cells},
                      key=lambda r: (rank.get(base(r), len(rank)), base(r), r != base(r), r))

    def duplicates(self) -> list[str]:
        """Cells holding one seed twice (e.g. a rerun beside the first run): both are averaged."""
        return [f"{m} on {p}: seeds {sorted(c.seeds)}" for (p, m), c in self.cells.items()
                if len(set(c.seeds)) < c.n]

    @property
    def compare_with_paper(self) -> bool:
        return self.metric == DEFAULT_METRIC

    def gap(self, pair: str, method: str) -> float | None:
        """Our gap closed (%) for ``method`` on ``pair``, when both bounds were run."""
        so, to, c = self.cells.get((pair, "source_only")), self.cells.get((pair, "target_only")), \
            self.cells.get((pair, method))
        if base(method) in BOUNDS or c is None or so is None or to is None or to.mean == so.mean:
            return None
        return gap_closed(c.mean, so.mean, to.mean)

    def paper(self, pair: str, method: str) -> tuple[float | None, bool]:
        return paper_value(base(method), pair) if self.compare_with_paper else (None, False)

    def paper_gap(self, pair: str, method: str) -> float | None:
        return PAPER_GAP.get(base(method), {}).get(STAND_INS.get(pair, pair)) if self.compare_with_paper else None


def row_name(method: str, selection: str) -> str:
    """``sa`` for the last-step rule, ``sa (oracle)`` for another."""
    return method if selection == DEFAULT_SELECTION else f"{method} ({selection})"


def base(row: str) -> str:
    """The method of a row: ``sa (oracle)`` -> ``sa``."""
    return row.split(" (")[0]


def build_table(records: list[dict[str, Any]], unreadable: list[tuple[Path, str]],
                metric: str = DEFAULT_METRIC) -> Table:
    """Group finished records by (pair, method); keep the others aside with their reasons."""
    cells: dict[tuple[str, str], Cell] = {}
    failed, skipped = [], []
    for r in sorted(records, key=lambda r: (str(r["pair"]), str(r["method"]), str(r["seed"]))):
        if r["status"] != "finished":
            failed.append(r)
            continue
        v = (r.get("metrics") or {}).get(metric)
        if not isinstance(v, (int, float)) or v != v:  # absent, not a number, or NaN
            skipped.append((r.get("_path", "?"), f"finished but {metric} is {v!r}"))
            continue
        sel = str(r.get("selection") or DEFAULT_SELECTION)
        c = cells.setdefault((str(r["pair"]), row_name(str(r["method"]), sel)), Cell())
        c.values.append(float(v))
        c.seeds.append(r["seed"])
        c.selections.append(sel)
    return Table(metric, cells, failed, list(unreadable), skipped)


# -- formatting ----------------------------------------------------------------------------
def fmt(x: float) -> str:
    """Accuracies the paper's way: ``.7512`` (``1.000`` and negatives keep their sign)."""
    s = f"{x:.4f}"
    return s[1:] if s.startswith("0.") else ("-" + s[2:] if s.startswith("-0.") else s)


def cell_text(t: Table, pair: str, method: str, pm: str = "±") -> str:
    c = t.cells.get((pair, method))
    paper, stand_in = t.paper(pair, method)
    parts = ["—"] if c is None else [
        f"{fmt(c.mean)} {pm} {fmt(c.std) if c.std is not None else '—'} ({c.n})"]
    if paper is not None:
        parts.append(f"[paper{'*' if stand_in else ''} {fmt(paper)}]")
    g = t.gap(pair, method)
    if g is not None:
        pg = t.paper_gap(pair, method)
        parts.append(f"gap {g:.1f}%" + (f" [paper {pg:.1f}%]" if pg is not None else ""))
    if c is not None and c.oracle:
        parts.append("{" + c.selection.replace(DEFAULT_SELECTION, "last step") + "}")
    return " ".join(parts)


def notes(t: Table) -> list[str]:
    """Lines under the table: what the cells mean, then failed, skipped and unreadable runs."""
    out = [f"Cells: {t.metric}, mean ± sample std (number of seeds) over finished runs."]
    if t.compare_with_paper and any(t.paper(p, m)[0] is not None for p in t.pairs for m in t.methods):
        out.append("[paper x]: Ganin et al. 2016, Table 2; gap: (method - source_only) / "
                   "(target_only - source_only) from our own means of that pair.")
        if any(p in STAND_INS for p in t.pairs):
            out.append("paper*: the paper's number for the original pair this regenerated domain stands in for ("
                       + ", ".join(f"{p} -> {STAND_INS[p]}" for p in t.pairs if p in STAND_INS) + ").")
    marked = sorted(f"{m} on {p}: {c.selection}" for (p, m), c in t.cells.items() if c.oracle)
    out.append("Model selection: last step (the weights at the end of training) in every cell"
               + (", except cells marked {oracle}, whose runs chose on target test labels: " + "; ".join(marked)
                  if marked else "") + ".")
    if t.duplicates():
        out.append("Warning: repeated seeds averaged as separate runs: " + "; ".join(t.duplicates()))
    if t.failed:
        out.append(f"Failed or unfinished runs (not averaged): {len(t.failed)}")
        out += [f"- {r.get('_path', '?')}: status {r['status']}" + (f", error: {r['error']}" if r.get("error") else "")
                for r in t.failed]
    if t.skipped:
        out.append(f"Finished runs without {t.metric} (not averaged): {len(t.skipped)}")
        out += [f"- {p}: {why}" for p, why in t.skipped]
    if t.unreadable:
        out.append(f"Unreadable records (not averaged): {len(t.unreadable)}")
        out += [f"- {p}: {why}" for p, why in t.unreadable]
    return out


def render_markdown(t: Table) -> str:
    rows = ["| method | " + " | ".join(t.pairs) + " |", "|---" * (len(t.pairs) + 1) + "|"]
    rows += [f"| {m} | " + " | ".join(cell_text(t, p, m) for p in t.pairs) + " |" for m in t.methods]
    return "\n".join(rows) + "\n\n" + "\n".join(notes(t)) + "\n"


def _tex(s: str) -> str:
    """Escape LaTeX's special characters (our names and notes hold no backslash)."""
    return re.sub(r"([&%_#{}$])", r"\\\1", s)


def render_latex(t: Table) -> str:
    lines = [r"\begin{tabular}{l" + "l" * len(t.pairs) + "}", r"\hline",
             "method & " + " & ".join(_tex(p) for p in t.pairs) + r" \\", r"\hline"]
    for m in t.methods:
        cells = [_tex(cell_text(t, p, m, pm="±")).replace("±", r"$\pm$").replace("—", "--") for p in t.pairs]
        lines.append(_tex(m) + " & " + " & ".join(cells) + r" \\")
    lines += [r"\hline", r"\end{tabular}"]
    return "\n".join(lines + ["% " + n.replace("\n", " ") for n in notes(t)]) + "\n"


CSV_FIELDS = ("pair", "method", "n", "mean", "std", "seeds", "selection", "paper", "gap_closed_pct", "paper_gap_pct")


def render_csv(t: Table) -> str:
    """Long form, one row per (pair, method); failed/unreadable runs go to stderr, not here."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for m in t.methods:
        for p in t.pairs:
            c = t.cells.get((p, m))
            if c is None:
                continue
            paper, _ = t.paper(p, m)
            g, pg = t.gap(p, m), t.paper_gap(p, m)
            w.writerow({"pair": p, "method": m, "n": c.n, "mean": f"{c.mean:.6f}",
                        "std": "" if c.std is None else f"{c.std:.6f}", "seeds": " ".join(map(str, c.seeds)),
                        "selection": c.selection, "paper": "" if paper is None else paper,
                        "gap_closed_pct": "" if g is None else f"{g:.2f}", "paper_gap_pct": "" if pg is None else pg})
    return buf.getvalue()


RENDER = {"markdown": render_markdown, "latex": render_latex, "csv": render_csv}


def save_png(t: Table, path: str | Path) -> Path:
    """Grouped bars per pair: ours (mean ± std, solid) beside the paper's (hatched), per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs, methods = t.pairs, t.methods
    width = 0.8 / (2 * len(methods))
    fig, ax = plt.subplots(figsize=(max(6.0, 2.2 * len(pairs)) + 2.0, 4.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, m in enumerate(methods):
        col = colours[i % len(colours)]
        xs = [j - 0.4 + (2 * i + 0.5) * width for j in range(len(pairs))]
        cells = [t.cells.get((p, m)) for p in pairs]
        ax.bar(xs, [c.mean if c else 0 for c in cells], width, color=col, label=f"{m} (ours)",
               yerr=[(c.std or 0) if c else 0 for c in cells], capsize=2)
        paper = [t.paper(p, m)[0] for p in pairs]
        if any(v is not None for v in paper):
            ax.bar([x + width for x in xs], [v or 0 for v in paper], width, color=col, alpha=0.35, hatch="//",
                   edgecolor=col, label=f"{m} (paper)")
    ax.set_xticks(range(len(pairs)))
    ax.set_xticklabels(pairs, fontsize=8)
    ax.set_ylabel(t.metric)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: bars stay visible
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="dann-table", description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dirs", nargs="*", help="folders searched recursively for results.json (or such files)")
    ap.add_argument("--wandb", metavar="ENTITY/PROJECT", help="read the runs from the W&B API instead")
    ap.add_argument("--group", help="with --wandb: only this group (the experiment or sweep)")
    ap.add_argument("--wandb-dir", help="read offline W&B runs (**/offline-run-*) under this folder instead")
    ap.add_argument("--format", choices=sorted(RENDER), default="markdown")
    ap.add_argument("--out", help="also write the table to this file")
    ap.add_argument("--png", help="write a grouped bar chart (ours vs the paper's) to this file")
    ap.add_argument("--metric", default=DEFAULT_METRIC, help=f"metric to tabulate (default {DEFAULT_METRIC})")
    a = ap.parse_args(argv)
    for d in a.run_dirs:
        if not Path(d).exists():
            print(f"dann-table: warning: {d} does not exist", file=sys.stderr)
    if a.wandb:
        from dann.wandb_offline import api_records

        records, bad = api_records(a.wandb, a.group)
    elif a.wandb_dir:
        from dann.wandb_offline import offline_records

        records, bad = offline_records(a.wandb_dir)
    elif a.run_dirs:
        records, bad = read_records(*a.run_dirs)
    else:
        ap.error("give run folders, --wandb ENTITY/PROJECT or --wandb-dir DIR")
    if not records:
        why = f"; {len(bad)} unreadable: " + "; ".join(f"{p}: {w}" for p, w in bad) if bad else ""
        src = a.wandb or a.wandb_dir or " ".join(a.run_dirs)
        print(f"dann-table: error: no readable run records in {src}{why}", file=sys.stderr)
        return 2
    t = build_table(records, bad, a.metric)
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
    return 0


def cli() -> None:
    """Console entry point ``dann-table``."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
