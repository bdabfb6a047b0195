"""The table as pictures: bars beside the paper's, and every cell's learning curves."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import NamedTuple

from dann.report.figures import pyplot, save_fig
from dann.report.table import Table, run_evaluations


def text(s: str) -> str:
    """A label from a record as matplotlib shows it literally (a ``$`` would start its math mode)."""
    return str(s).replace("$", r"\$")


OFF_PROTOCOL = "≠"  # over a paper bar or line: the cell's runs left the paper's protocol (Table.off_protocol)


def row_colours(plt, n: int) -> list:
    """One colour per row: the style's cycle, or, for more rows than it has, tab10 then Dark2 (18
    hues apart; tab20's light twins would put two rows in near-identical colours), then tab20."""
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    if n <= len(colours):
        return colours
    if n <= 18:
        return [plt.get_cmap("tab10")(i) for i in range(10)] + [plt.get_cmap("Dark2")(i) for i in range(8)]
    return [plt.get_cmap("tab20")(i) for i in range(20)]


def save_png(t: Table, path: str | Path) -> Path:
    """Grouped bars per pair: ours (mean ± std, solid) beside the paper's (hatched), per method."""

    plt = pyplot()

    pairs, methods = t.pairs, t.methods
    width = 0.8 / (2 * len(methods))
    off = False
    fig, ax = plt.subplots(figsize=(max(6.0, 2.2 * len(pairs)) + 2.0, 4.2))
    colours = row_colours(plt, len(t.methods))
    for i, m in enumerate(methods):
        col = colours[i % len(colours)]
        xs = [j - 0.4 + (2 * i + 0.5) * width for j in range(len(pairs))]
        cells = [t.cells.get((p, m)) for p in pairs]
        have = [(x, c) for x, c in zip(xs, cells) if c]
        ax.bar([x for x, _ in have], [c.mean for _, c in have], width, color=col, label=f"{text(m)} (ours)",
               yerr=[c.std or 0 for _, c in have], capsize=2)
        for x, c in zip(xs, cells):  # a missing cell is written as such, never drawn as a zero bar
            if not c:
                ax.text(x, 0.01, "no runs", rotation=90, ha="center", va="bottom", fontsize=7, color=col)
        paper = [t.paper(p, m)[0] for p in pairs]
        if any(v is not None for v in paper):
            ax.bar([x + width for x in xs], [v or 0 for v in paper], width, color=col, alpha=0.35, hatch="//",
                   edgecolor=col, label=f"{text(m)} (paper)")
        for x, p, v in zip(xs, pairs, paper):  # beside runs of another protocol the paper's bar says so
            if v is not None and t.off_protocol(p, m):
                ax.text(x + width, v + 0.01, OFF_PROTOCOL, ha="center", va="bottom", fontsize=9, color=col)
                off = True
    ax.set_xticks(range(len(pairs)))
    ax.set_xticklabels([text(p).replace(" [", "\n[").replace(", ", ",\n") for p in pairs], fontsize=8)
    ax.set_ylabel(t.metric)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0),  # outside: bars stay visible
              title=f"{OFF_PROTOCOL}: our runs are not on the\npaper's protocol (see the table)" if off else None,
              title_fontsize=7)
    return save_fig(fig, path)


class Curve(NamedTuple):
    """One run's target test accuracy at each evaluation (its ``evaluations.jsonl``)."""

    seed: int
    steps: list[int]
    accs: list[float]


def curves(t: Table) -> tuple[dict[tuple[str, str], list[Curve]], list[str]]:
    """Each cell's learning curves, and the averaged runs that have none (listed, not drawn)."""

    out: dict[tuple[str, str], list[Curve]] = {}
    missing = []
    for key, c in t.cells.items():
        for r, seed in zip(c.records, c.seeds):
            rows, why = run_evaluations(r)
            evals = [e for e in rows if isinstance(e.get("tgt_acc"), (int, float)) and e["tgt_acc"] == e["tgt_acc"]]
            if not evals:
                missing.append(f"{r.get('_path', '?')} ({key[1]} on {key[0]}, seed {seed}): "
                               f"{why or 'no evaluations.jsonl'}")
                continue
            out.setdefault(key, []).append(Curve(seed, [int(e["step"]) for e in evals],
                                                 [float(e["tgt_acc"]) for e in evals]))
    return out, missing


def mean_curve(runs: list[Curve]) -> tuple[list[int], list[float]]:
    """The mean over runs at the steps every run evaluated (a shorter or resumed run limits it)."""
    steps = sorted(set.intersection(*(set(c.steps) for c in runs))) if runs else []
    at = [dict(zip(c.steps, c.accs)) for c in runs]
    return steps, [statistics.fmean(a[s] for a in at) for s in steps]


def save_curves_png(t: Table, path: str | Path) -> tuple[Path | None, list[str]]:
    """One panel per column: each run's target test accuracy at every evaluation (thin), the mean
    over its cell's seeds (thick), one colour per row; the paper's number as a dashed line. For
    reading training lengths and seed spread, not for choosing checkpoints (docs/how-to/model-selection.md)."""
    data, missing = curves(t)
    if not data:
        return None, missing

    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    pairs = [p for p in t.pairs if any(k[0] == p for k in data)]
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.2 * len(pairs), 4.0), squeeze=False)
    colours = row_colours(plt, len(t.methods))
    handles = {}  # one legend for the figure, in the table's row order, outside the panels
    off = False
    for ax, p in zip(axes[0], pairs):
        for i, m in enumerate(t.methods):
            runs = data.get((p, m))
            if not runs:
                continue
            col = colours[i % len(colours)]
            for c in runs:
                ax.plot(c.steps, c.accs, color=col, lw=0.7, alpha=0.45)
            steps, mean = mean_curve(runs)
            handles[i] = ax.plot(steps, mean, color=col, lw=2.0, label=text(m))[0]
            paper = t.paper(p, m)[0]
            if paper is not None:
                ax.axhline(paper, color=col, lw=0.8, ls="--")
                if t.off_protocol(p, m):  # the paper's line beside runs of another protocol says so
                    ax.text(1.0, paper, OFF_PROTOCOL, transform=ax.get_yaxis_transform(), ha="left", va="center",
                            fontsize=9, color=col)
                    off = True
        n = sorted({len(runs) for (q, _), runs in data.items() if q == p})
        per_row = f"{n[0]}" if n[0] == n[-1] else f"{n[0]}-{n[-1]}"
        ax.set_title(text(p).replace(" [", "\n[") + f"  ({per_row} {'run' if n[-1] == 1 else 'runs'} per row)", fontsize=9)
        ax.set_xlabel("step")
        # from step 0 to the panel's last evaluation: columns of the same length get the same axis,
        # whichever steps their runs happened to evaluate at
        ax.set_xlim(0, max(s for (q, _), runs in data.items() if q == p for c in runs for s in c.steps) * 1.02)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))  # 15,000-step labels stay apart
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0][-1].legend([handles[i] for i in sorted(handles)], [text(t.methods[i]) for i in sorted(handles)], fontsize=7,
                       loc="upper left", bbox_to_anchor=(1.01, 1.0), title="thin: seeds, thick: mean,\ndashed: paper"
                       + (f"\n{OFF_PROTOCOL}: runs not on the paper's\nprotocol (see the table)" if off else ""),
                       title_fontsize=7)
    axes[0][0].set_ylabel("target test accuracy at each evaluation")
    return save_fig(fig, path), missing
