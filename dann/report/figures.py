"""Figures of a run: learning curves, decision boundaries on 2-D toy problems (the paper's Figure 2 style)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

GRID = 200


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_fig(fig, path: str | Path, dpi: int = 110) -> Path:
    """Lay out, write (making the folder) and close ``fig``; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path


@torch.no_grad()
def boundary_grid(model: torch.nn.Module, pts: np.ndarray, margin: float = 0.5) -> dict[str, np.ndarray]:
    """P(class 1) of ``model`` on a regular grid covering ``pts``."""
    lo, hi = pts.min(0) - margin, pts.max(0) + margin
    xx, yy = np.meshgrid(np.linspace(lo[0], hi[0], GRID), np.linspace(lo[1], hi[1], GRID))
    grid = torch.from_numpy(np.c_[xx.ravel(), yy.ravel()].astype(np.float32))
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    prob = torch.softmax(model(grid.to(dev)), dim=1)[:, 1].cpu().numpy().reshape(xx.shape)
    model.train(was_training)
    return {"xx": xx, "yy": yy, "prob": prob}


def draw_boundary(ax, grid: dict[str, np.ndarray], src: tuple[np.ndarray, np.ndarray],
                  tgt: tuple[np.ndarray, np.ndarray], title: str) -> None:
    ax.contourf(grid["xx"], grid["yy"], grid["prob"], levels=20, cmap="RdBu", alpha=0.35)
    ax.contour(grid["xx"], grid["yy"], grid["prob"], levels=[0.5], colors="k", linewidths=1.5)
    (xs, ys), (xt, _) = src, tgt  # target labels are not drawn: unlabelled
    ax.scatter(xs[ys == 0, 0], xs[ys == 0, 1], c="tab:red", marker="+", s=18, label="source, class 0")
    ax.scatter(xs[ys == 1, 0], xs[ys == 1, 1], c="tab:blue", marker="_", s=18, label="source, class 1")
    ax.scatter(xt[:, 0], xt[:, 1], c="0.45", s=6, alpha=0.6, label="target (unlabelled)")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])


def save_decision_boundary(model, dm, path: Path, title: str) -> Path:
    """Plot the decision boundary with source and target training points; keep the grid
    as ``boundary.npz`` beside the PNG so a sweep summary can draw runs side by side."""
    plt = pyplot()
    src = (dm.src_train.x.cpu().numpy(), dm.src_train.y.cpu().numpy())
    tgt = (dm.tgt_train.x.cpu().numpy(), dm.tgt_train.y.cpu().numpy())
    grid = boundary_grid(model, np.concatenate([src[0], tgt[0]]))
    np.savez_compressed(Path(path).with_name("boundary.npz"), **grid, xs=src[0], ys=src[1], xt=tgt[0], yt=tgt[1])
    fig, ax = plt.subplots(figsize=(5, 4.5))
    draw_boundary(ax, grid, src, tgt, title)
    ax.legend(loc="lower left", fontsize=7)
    return save_fig(fig, path)


def save_boundaries_side_by_side(runs: list[tuple[str, Path]], path: Path) -> Path:
    """One panel per (title, boundary.npz), e.g. source-only beside DANN."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 4.5), squeeze=False)
    for ax, (title, npz) in zip(axes[0], runs):
        d = np.load(npz)
        draw_boundary(ax, d, (d["xs"], d["ys"]), (d["xt"], d["yt"]), title)
    axes[0][0].legend(loc="lower left", fontsize=7)
    return save_fig(fig, path)


def _read_curves(metrics_csv: Path) -> dict[str, tuple[list[int], list[float]]]:
    curves: dict[str, tuple[list[int], list[float]]] = {}
    for row in csv.DictReader(Path(metrics_csv).open(newline="")):
        step = int(row["step"])
        for k, v in row.items():
            if k not in ("step", "epoch") and v not in ("", None):
                curves.setdefault(k, ([], []))
                curves[k][0].append(step)
                curves[k][1].append(float(v))
    return curves


def save_learning_curves(metrics_csv: Path, path: Path, title: str = "") -> Path | None:
    """Accuracies (validation, and training ones such as DANN's domain accuracy), every other
    logged training value (the method's loss terms), lambda and lr, over steps."""
    curves = _read_curves(metrics_csv)
    if not curves:
        return None
    plt = pyplot()
    # every logged value finds its panel, so a new method's loss terms are drawn unasked
    sched = [k for k in ("train/lambda", "train/lr") if k in curves]
    acc = [k for k in curves if k.endswith("_acc") and k.split("/")[0] in ("val", "train")]
    loss = [k for k in curves if k.startswith("train/") and k not in sched and k not in acc]
    groups = [("accuracy", acc), ("loss", loss), ("schedules", sched)]
    # one x-axis for the three panels: validation points (every few hundred steps) and training
    # values (every few dozen) cover the same steps, so they line up from step 0 to the last one
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8), sharex=True)
    axes[0].set_xlim(0, max(max(xs) for xs, _ in curves.values()) * 1.02)
    for ax, (name, keys) in zip(axes, groups):
        for k in keys:
            if k in curves:
                xs, ys = curves[k]
                ax.plot(xs, ys, label=k, marker="o" if k.startswith("val") else None, ms=3)
        ax.set_xlabel("step")
        ax.set_title(name)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        if name == "schedules" and "train/lr" in curves:
            ax.set_yscale("log")
    fig.suptitle(title)
    return save_fig(fig, path, dpi=100)


def save_run_figures(model, dm, out: Path, title: str) -> dict[str, Path]:
    """Learning curves for every run; decision boundaries for 2-D pairs. A figure that cannot be
    written (a full disk) is a warning: the run's record is written before, and stays."""
    import logging

    figs: dict[str, Path] = {}
    try:
        if (out / "metrics.csv").exists():
            p = save_learning_curves(out / "metrics.csv", out / "learning_curves.png", title=title)
            if p:
                figs["learning_curves"] = p
        x = dm.split("src", "train").x
        if x.dim() == 2 and x.shape[1] == 2:
            figs["decision_boundary"] = save_decision_boundary(model, dm, out / "decision_boundary.png",
                                                               title=title.split(", seed")[0])
    except OSError as e:
        logging.getLogger(__name__).warning("the run's figures were not all written (%s); its record is", e)
    return figs
