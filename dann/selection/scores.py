"""The label-free scores, as pure functions of a model's outputs (no model, no data set here).

Each takes tensors or arrays and returns a float. :mod:`dann.selection.validators` registers
them as validators, fed from one forward pass per evaluation. Notation: ``P`` is the ``N x K``
matrix of a model's softmax predictions on unlabelled target samples, ``f`` their features.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dann.blas import one_blas_thread

SND_TEMPERATURE = 0.05
#: MixVal's mixing weight of the first image (Hu et al. 2023 use 0.55)
MIXVAL_LAMBDA = 0.55
#: MaNo's norm order, uncertainty threshold and Taylor order (Xie et al. 2024's defaults)
MANO_P, MANO_THRESHOLD, MANO_TAYLOR = 4, 5.0, 2


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * p.clamp_min(1e-12).log()).sum(-1)


def _standardised(*xs: np.ndarray) -> list[np.ndarray]:
    """z-score with the statistics of all of ``xs`` together (features of different scales)."""
    allx = np.concatenate(xs)
    mu, sd = allx.mean(0), allx.std(0) + 1e-6
    return [(x - mu) / sd for x in xs]


# -- scores of the target predictions ----------------------------------------------------------------
def entropy_score(probs: torch.Tensor) -> float:
    """Mean entropy of the predictions (nats); lower = more confident."""
    return float(_entropy(probs).mean())


def im_score(probs: torch.Tensor) -> float:
    """Information maximisation: entropy of the mean prediction minus mean entropy (higher is better)."""
    return float(_entropy(probs.mean(0)) - _entropy(probs).mean())


def snd_score(probs: torch.Tensor, temperature: float = SND_TEMPERATURE) -> float:
    """Soft neighbourhood density (Saito et al. 2021): higher means denser target clusters."""
    z = F.normalize(probs.float(), dim=1)
    sim = z @ z.T
    sim.fill_diagonal_(-float("inf"))
    return float(_entropy(torch.softmax(sim / temperature, dim=1)).mean())


def bnm_score(probs: torch.Tensor) -> float:
    """Batch nuclear norm (Cui et al., CVPR 2020, eq. 11, used as a validator by Musgrave et al. 2022):
    ``||P||_* / N``. Large for predictions that are both confident (each row near one-hot) and
    diverse (many classes used): at most ``sqrt(min(N, K) / N)``."""
    return float(torch.linalg.svdvals(probs.double()).sum() / len(probs))


def mano_score(logits: torch.Tensor, p: int = MANO_P, threshold: float = MANO_THRESHOLD,
               taylor: int = MANO_TAYLOR) -> float:
    """MaNo (Xie et al., NeurIPS 2024, eq. 5-6): ``(1 / NK) ^ (1/p) ||sigma(Z)||_p``, the entry-wise
    p-norm of the normalised logits. ``sigma`` is the softmax when the predictions are far from
    uniform (mean cross-entropy to the uniform distribution above ``threshold``), else the
    normalised second-order Taylor expansion of ``exp`` (less over-confident). Higher: more
    accurate, by the paper's estimate."""
    z = logits.double()
    n, k = z.shape
    uniform = torch.full_like(z, 1.0 / k)
    if float(F.cross_entropy(z, uniform)) > threshold:
        s = torch.softmax(z, 1)
    else:
        s = 1 + z
        for i in range(2, taylor + 1):
            s = s + z ** i / math.factorial(i)
        s = s - s.min(1, keepdim=True).values
        s = s / s.sum(1, keepdim=True).clamp_min(1e-12)
    return float(s.abs().pow(p).sum().pow(1 / p) / (n * k) ** (1 / p))


@one_blas_thread
def class_ami(features: np.ndarray, predicted: np.ndarray, num_classes: int, seed: int = 0) -> float:
    """ClassAMI (Musgrave et al. 2022): the adjusted mutual information between k-means clusters of
    the target features (``K`` clusters, features standardised) and the predicted classes. 1 when
    the classifier's decisions follow the clusters of its own features; about 0 when unrelated."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_mutual_info_score

    (z,) = _standardised(features)
    clusters = KMeans(num_classes, n_init=1, max_iter=100, random_state=seed).fit_predict(z)
    return float(adjusted_mutual_info_score(predicted, clusters))


def mix_pairs(predicted: torch.Tensor, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(a, b, same)``: up to ``n`` intra-class pairs (both predicted the same class) and ``n``
    inter-class pairs (different classes) of rows of ``predicted``, seeded; ``same`` marks intra."""
    g = torch.Generator().manual_seed(seed)
    m = len(predicted)
    a = torch.randperm(m, generator=g)
    b = torch.randperm(m, generator=g)
    same = predicted[a] == predicted[b]
    inter_a, inter_b = a[~same][:n], b[~same][:n]
    # intra: each sample with another one of its predicted class (a random member, not itself)
    ia, ib = [], []
    for c in predicted.unique():
        members = (predicted == c).nonzero().flatten()
        if len(members) < 2:
            continue
        shift = members[torch.randperm(len(members), generator=g)]
        ia.append(shift)
        ib.append(shift.roll(1))
    if ia:
        intra_a, intra_b = torch.cat(ia), torch.cat(ib)
    else:  # every predicted class has a single member
        intra_a = intra_b = torch.zeros(0, dtype=torch.long)
    keep = torch.randperm(len(intra_a), generator=g)[:n]
    intra_a, intra_b = intra_a[keep], intra_b[keep]
    return (torch.cat([intra_a, inter_a]), torch.cat([intra_b, inter_b]),
            torch.cat([torch.ones(len(intra_a), dtype=torch.bool), torch.zeros(len(inter_a), dtype=torch.bool)]))


def mixval_score(mixed_predictions: torch.Tensor, pseudo_a: torch.Tensor, same: torch.Tensor) -> float:
    """MixVal (Hu et al., NeurIPS 2023): a model's accuracy on mixed target images
    ``x = lambda x_a + (1 - lambda) x_b`` (lambda = 0.55) against the pseudo-label of ``x_a``, the
    larger part, averaged over intra-class pairs (ICE_intra: ``x_a, x_b`` predicted the same class)
    and inter-class pairs (ICE_inter). The paper ranks candidates by the two accuracies' ranks;
    per checkpoint we average the accuracies (NaN without any pair of a kind)."""
    hit = (mixed_predictions == pseudo_a).float()
    intra, inter = hit[same], hit[~same]
    if len(intra) == 0 or len(inter) == 0:
        return math.nan
    return float((intra.mean() + inter.mean()) / 2)


def ensv_scores(probs: Sequence[torch.Tensor | np.ndarray]) -> list[float]:
    """EnsV (Hu et al., NeurIPS 2024): each candidate's agreement with the ensemble of all
    candidates, ``mean_i [argmax P^(c)_i = argmax (1/C) sum_c' P^(c')_i]``, for candidates ``c``
    predicting the same target samples. A rule over a set of checkpoints: the scores change with
    the set. Higher is better."""
    ps = [torch.as_tensor(np.asarray(p, dtype=np.float32)) for p in probs]
    if not ps:
        return []
    shapes = {tuple(p.shape) for p in ps}
    if len(shapes) != 1:
        raise ValueError(f"EnsV compares predictions of the same samples; got shapes {sorted(shapes)}")
    ensemble = torch.stack(ps).mean(0).argmax(1)
    return [float((p.argmax(1) == ensemble).float().mean()) for p in ps]


# -- scores with the source validation split -------------------------------------------------------
@one_blas_thread
def density_ratio(f_src: np.ndarray, f_tgt: np.ndarray, f_eval: np.ndarray, seed: int = 0) -> np.ndarray:
    """``w(x) = p_t(x) / p_s(x)`` at ``f_eval``, from a logistic domain classifier (You et al. 2019)."""
    from sklearn.linear_model import LogisticRegression

    fs, ft, fe = _standardised(f_src, f_tgt, f_eval)
    clf = LogisticRegression(max_iter=1000, C=1.0, random_state=seed).fit(
        np.concatenate([fs, ft]), np.r_[np.zeros(len(fs)), np.ones(len(ft))])
    p_t = clf.predict_proba(fe)[:, 1].clip(1e-6, 1 - 1e-6)
    return (len(fs) / len(ft)) * p_t / (1 - p_t)


def dev_risk(val_losses: np.ndarray, weights: np.ndarray) -> float:
    """Deep Embedded Validation risk (You et al., ICML 2019, Alg. 1): the importance-weighted
    source-validation loss with its control variate, ``mean(w l) + eta mean(w) - eta``,
    ``eta = -Cov(w l, w) / Var(w)``. Lower is better."""
    wl = weights * val_losses
    var = weights.var(ddof=1) if len(weights) > 1 else 0.0
    eta = -np.cov(wl, weights, ddof=1)[0, 1] / var if var > 0 else 0.0
    return float(wl.mean() + eta * weights.mean() - eta)


def iwcv_score(val_losses: np.ndarray, weights: np.ndarray) -> float:
    """IWCV (Sugiyama et al., JMLR 2007, eq. 8): minus the importance-weighted source-validation
    loss, ``-mean_i w(x_i) l(x_i)``; higher is better."""
    return -float(np.mean(weights * val_losses))


def devn_score(val_losses: np.ndarray, weights: np.ndarray) -> float:
    """DEVN (Musgrave et al. 2022): minus the DEV risk with max-normalised weights ``w / max(w)``,
    which keeps a few huge density ratios from dominating; higher is better."""
    return -dev_risk(val_losses, weights / max(float(weights.max()), 1e-12))


@one_blas_thread
def reverse_validation(f_tgt: np.ndarray, pseudo: np.ndarray, f_src_val: np.ndarray, y_src_val: np.ndarray,
                       seed: int = 0) -> float:
    """Accuracy on the source validation split of a classifier trained on pseudo-labelled target."""
    from sklearn.linear_model import LogisticRegression

    classes = np.unique(pseudo)
    if len(classes) < 2:  # the model predicts one class everywhere: so does the reverse classifier
        return float((y_src_val == classes[0]).mean())
    ft, fv = _standardised(f_tgt, f_src_val)
    clf = LogisticRegression(max_iter=500, C=1.0, random_state=seed).fit(ft, pseudo)
    return float((clf.predict(fv) == y_src_val).mean())
