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


def pad_score(model, dm) -> dict[str, float]:
    """``test/pad``: the proxy A-distance of the model's features on the test sets (no label read)."""
    fs, _ = extract_features(model.features, dm.split("src", "test"))
    ft, _ = extract_features(model.features, dm.split("tgt", "test"))
    return {"test/pad": proxy_a_distance(fs, ft)}
