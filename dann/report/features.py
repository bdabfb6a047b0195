"""The paper's analysis of learnt features: proxy A-distance and t-SNE.

* PAD (Ben-David et al.; Ganin et al. 2016 section 5.2.4): train a linear classifier to tell
  source from target features; with its test error ``err``, ``PAD = 2 (1 - 2 err)``: near 0
  when the domains are indistinguishable, near 2 when they are separable.
* t-SNE (scikit-learn) of source and target features, coloured by domain and by class: the
  paper's figure of domains mixed after adaptation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dann.blas import one_blas_thread
from dann.report.figures import pyplot, save_fig


@torch.no_grad()
def extract_features(features: torch.nn.Module, split, max_n: int = 2000, seed: int = 0,
                     batch: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``max_n`` rows of ``features(x)`` (a seeded subsample) and their labels."""
    idx = split.sample(max_n, seed)
    was = features.training
    features.eval()
    out = [features(x).flatten(1).float().cpu() for x in split.batches(idx, batch, next(features.parameters()).device)]
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


DOMAIN_MARKERS = {"source": "o", "target": "^"}  # one marker per domain, in both rows of the figure


def save_tsne(panels: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]], path: Path,
              seed: int = 0) -> Path:
    """One column per (title, src_features, tgt_features, src_labels, tgt_labels); top row
    coloured by domain, bottom row by class with a legend of the classes; in both rows the marker
    tells the domain (source ``o``, target ``^``)."""
    plt = pyplot()
    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(2, len(panels), figsize=(5 * len(panels) + 1.5, 9.5), squeeze=False)
    for c, (title, fs, ft, ys, yt) in enumerate(panels):
        zs, zt = tsne_embed(fs, ft, seed)
        k = int(max(ys.max(), yt.max())) + 1
        cmap = plt.get_cmap("tab10" if k <= 10 else "tab20" if k <= 20 else "nipy_spectral")
        colour = (lambda y: cmap(y)) if k <= 20 else (lambda y: cmap(y / max(k - 1, 1)))
        ax = axes[0][c]
        for (name, z), col in zip((("source", zs), ("target", zt)), ("tab:blue", "tab:red")):
            ax.scatter(z[:, 0], z[:, 1], s=4, c=col, marker=DOMAIN_MARKERS[name], label=name, alpha=0.6,
                       linewidths=0)
        ax.set_title(f"{title}: by domain")
        ax.legend(markerscale=3, fontsize=8)
        ax = axes[1][c]
        for name, z, y in (("source", zs, ys), ("target", zt, yt)):
            ax.scatter(z[:, 0], z[:, 1], s=4, c=[colour(int(v)) for v in y], marker=DOMAIN_MARKERS[name], label=name,
                       alpha=0.6, linewidths=0)
        ax.set_title(f"{title}: by class")
        handles = [Line2D([], [], ls="", marker="s", color=colour(i), label=f"class {i}") for i in range(k)]
        handles += [Line2D([], [], ls="", marker=m, color="0.3", label=name) for name, m in DOMAIN_MARKERS.items()]
        ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  ncol=1 if k <= 12 else 2, handletextpad=0.2)
        for a in axes[:, c]:
            a.set_xticks([])
            a.set_yticks([])
    return save_fig(fig, path, dpi=100)


def pad_score(model, dm) -> dict[str, float]:
    """``test/pad``: the proxy A-distance of the model's features on the test sets (no label read)."""
    fs, _ = extract_features(model.features, dm.split("src", "test"))
    ft, _ = extract_features(model.features, dm.split("tgt", "test"))
    return {"test/pad": proxy_a_distance(fs, ft)}
