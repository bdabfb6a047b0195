"""The paper's analysis: proxy A-distance, t-SNE of features, learning curves.

* PAD (Ben-David et al.; Ganin et al. 2016 section 5.2.4): train a linear classifier to tell
  source from target features; with its test error ``err``, ``PAD = 2 (1 - 2 err)``: near 0
  when the domains are indistinguishable, near 2 when they are separable.
* t-SNE (scikit-learn) of source and target features, coloured by domain and by class: the
  paper's figure of domains mixed after adaptation.
* Learning curves from a run's ``metrics.csv``.
* A finished run's network evaluated on any registered domain (``scripts/evaluate.py``): is the
  source domain what the target needs, how does a model do on a third domain.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dann.plots import pyplot, save_fig
from dann.speed import one_blas_thread


def run_record(run_dir: Path) -> dict[str, Any]:
    """A finished run's results record; exits with a message if it or the final checkpoint is missing."""
    run_dir = Path(run_dir)
    if not (run_dir / "results.json").is_file():
        raise SystemExit(f"{run_dir}: no results.json (give the directory of a finished run)")
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    if not ckpt.exists():
        raise SystemExit(f"{ckpt} not found: this needs the run's final checkpoint (checkpoint.keep=true)")
    return json.loads((run_dir / "results.json").read_text())


def load_run(run_dir: Path, root: Path | None = None, rec: dict[str, Any] | None = None
             ) -> tuple[dict[str, Any], Any, Any]:
    """A finished run's (record, datamodule set up for test, model with its final weights):
    the run's own config (its custom domains registered) rebuilds both; ``root``: the data
    root to read the domains from instead of the run's ``data.root``; ``rec``: the record, if
    already read with :func:`run_record`."""
    from omegaconf import OmegaConf

    from dann.data.custom import register_custom_domains
    from dann.train import build_datamodule, build_method

    rec = rec if rec is not None else run_record(run_dir)
    ckpt = Path(run_dir) / "checkpoints" / "last.ckpt"
    cfg = OmegaConf.create(rec["config"])
    if root is not None:
        cfg.data.root = str(root)
    register_custom_domains(cfg.get("domains"))
    dm = build_datamodule(cfg)
    dm.setup("test")
    model = build_method(cfg, dm.input_shape, dm.num_classes)
    model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"])
    model.eval()
    return rec, dm, model


def domain_split(dm, domain: str, split: str = "test"):
    """Split ``split`` (train | test | all) of ``domain`` as the run ``dm`` belongs to feeds its
    network: the same channels, size and fit, minus the run's mean (not the domain's own)."""
    from dann.data.datamodule import DeviceSplit, harmonise
    from dann.data.domains import Split, get_domain, load_split

    d = get_domain(domain)  # an unknown name: KeyError listing the registered domains
    if d.num_classes != dm.num_classes:
        raise ValueError(f"domain {domain} has {d.num_classes} classes; the run's network predicts "
                         f"{dm.num_classes} ({dm.source} -> {dm.target})")
    if split not in ("train", "test", "all"):
        raise ValueError(f"split={split!r}: allowed train, test, all")
    parts = [load_split(domain, s, dm.root) for s in (("train", "test") if split == "all" else (split,))]
    s = Split(torch.cat([p.x for p in parts]), torch.cat([p.y for p in parts]))
    x = harmonise(s.x, dm.channels, dm.image_size, fit=dm.fit)
    if tuple(x.shape[1:]) != tuple(dm.input_shape):
        raise ValueError(f"domain {domain}'s inputs are {tuple(x.shape[1:])}, the network takes "
                         f"{tuple(dm.input_shape)}: this run's pair does not set channels/image_size to convert them")
    return DeviceSplit(x, s.y, dm.src_test.mean)


@torch.no_grad()
def extract_features(features: torch.nn.Module, split, max_n: int = 2000, seed: int = 0,
                     batch: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``max_n`` rows of ``features(x)`` (a seeded subsample) and their labels."""
    n = len(split)
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_n].sort().values
    was = features.training
    features.eval()
    dev = next(features.parameters()).device
    out = [features(split.inputs(idx[a:a + batch].to(split.y.device)).to(dev)).flatten(1).float().cpu()
           for a in range(0, len(idx), batch)]
    features.train(was)
    return torch.cat(out).numpy(), split.y[idx.to(split.y.device)].cpu().numpy()


@one_blas_thread
def proxy_a_distance(fs: np.ndarray, ft: np.ndarray, seed: int = 0) -> float:
    """``2 (1 - 2 err)`` of a linear domain classifier trained on half of a balanced sample
    of source and target features and tested on the other half."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    n = min(len(fs), len(ft))
    x = np.concatenate([fs[rng.permutation(len(fs))[:n]], ft[rng.permutation(len(ft))[:n]]])
    y = np.r_[np.zeros(n), np.ones(n)]
    perm = rng.permutation(2 * n)
    tr, te = perm[:n], perm[n:]
    scaler = StandardScaler().fit(x[tr])
    clf = LogisticRegression(max_iter=2000, C=1.0).fit(scaler.transform(x[tr]), y[tr])
    err = 1.0 - clf.score(scaler.transform(x[te]), y[te])
    return float(2.0 * (1.0 - 2.0 * err))


def tsne_embed(fs: np.ndarray, ft: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.manifold import TSNE

    z = TSNE(n_components=2, init="pca", random_state=seed, perplexity=30).fit_transform(np.concatenate([fs, ft]))
    return z[:len(fs)], z[len(fs):]


def save_tsne(panels: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]], path: Path,
              seed: int = 0) -> Path:
    """One column per (title, src_features, tgt_features, src_labels, tgt_labels); top row
    coloured by domain, bottom row by class."""
    plt = pyplot()
    fig, axes = plt.subplots(2, len(panels), figsize=(5 * len(panels), 9.5), squeeze=False)
    for c, (title, fs, ft, ys, yt) in enumerate(panels):
        zs, zt = tsne_embed(fs, ft, seed)
        ax = axes[0][c]
        ax.scatter(zs[:, 0], zs[:, 1], s=3, c="tab:blue", label="source", alpha=0.6)
        ax.scatter(zt[:, 0], zt[:, 1], s=3, c="tab:red", label="target", alpha=0.6)
        ax.set_title(f"{title}: by domain")
        ax.legend(markerscale=4, fontsize=8)
        ax = axes[1][c]
        z, y = np.concatenate([zs, zt]), np.concatenate([ys, yt])
        ax.scatter(z[:, 0], z[:, 1], s=3, c=y, cmap="tab10" if y.max() < 10 else "nipy_spectral", alpha=0.6)
        ax.set_title(f"{title}: by class")
        for a in axes[:, c]:
            a.set_xticks([])
            a.set_yticks([])
    return save_fig(fig, path, dpi=100)


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
    """Accuracies, losses (and domain-classifier accuracy), lambda and lr over steps."""
    curves = _read_curves(metrics_csv)
    if not curves:
        return None
    plt = pyplot()
    groups = [("accuracy", ["val/src_acc", "val/tgt_acc", "train/dom_acc"]),
              ("loss", ["train/cls", "train/dom", "train/loss"]),
              ("schedules", ["train/lambda", "train/lr"])]
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
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
