"""Hydra callbacks: a summary table (and figure, for 2-D pairs) at the end of a multirun."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from dann.results import atomic_write_text, read_records


def summary_markdown(records: list[dict[str, Any]], bad: list) -> str:
    rows = ["| pair | method | seed | steps | test/src_acc | test/tgt_acc | status | wall s |",
            "|---|---|---|---|---|---|---|---|"]
    for r in sorted(records, key=lambda r: (r["pair"], r["method"], r["seed"])):
        m = r.get("metrics", {})
        f = lambda k: f"{m[k]:.4f}" if k in m else "—"  # noqa: E731
        rows.append(f"| {r['pair']} | {r['method']} | {r['seed']} | {r['steps']} | {f('test/src_acc')} | "
                    f"{f('test/tgt_acc')} | {r['status']} | {r['wall_time_s']:.1f} |")
    rows += [f"| unreadable: {p} | {why} |||||||" for p, why in bad]
    return "\n".join(rows) + "\n"


class SweepSummary(Callback):
    """Print the sweep's runs as a table; write ``summary.md`` and, when the runs drew
    2-D decision boundaries, ``decision_boundaries.png`` with the runs side by side."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        records, bad = read_records(sweep_dir)
        if not records and not bad:
            return
        md = summary_markdown(records, bad)
        atomic_write_text(sweep_dir / "summary.md", md)
        print(f"\nResults of the sweep in {sweep_dir}:\n\n{md}")
        runs = [(f"{r['method']} (target acc {r['metrics'].get('test/tgt_acc', float('nan')):.3f})",
                 Path(r["_path"]).with_name("boundary.npz")) for r in sorted(records, key=lambda r: r["method"],
                                                                           reverse=True)]
        runs = [(t, p) for t, p in runs if p.exists()]
        if runs:
            from dann.plots import save_boundaries_side_by_side

            png = save_boundaries_side_by_side(runs, sweep_dir / "decision_boundaries.png")
            print(f"Decision boundaries: {png}")
