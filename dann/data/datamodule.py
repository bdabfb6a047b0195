"""Pairs a source and a target domain and serves batches straight from device tensors.

Each split is held as one tensor (uint8 images or float features) on the training device.
A training batch is drawn by indexing those tensors with a slice of a per-epoch random
permutation, then converted and normalised in one batched operation: there is no
per-sample Python in the training loop.

Batch ``k`` of a stream is a pure function of ``(seed, stream, k, rank, world_size)``:
the same seed gives the same batches, a resumed run continues from ``trainer.global_step``
with exactly the batches an uninterrupted run would have seen, and under DDP each rank
takes its own disjoint share (``perm[rank::world_size]``) of every epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from dann.data.domains import Split, get_domain, load_split
from dann.errors import ConfigError

SRC_STREAM, TGT_STREAM = 0, 1


FITS = ("resize", "pad")
#: what the mean subtracted from every image is computed on (data.mean_of)
MEANS = ("pooled", "source")


def harmonise(x: torch.Tensor, channels: int | None, size: int | None, chunk: int = 8192,
              fit: str = "resize") -> torch.Tensor:
    """Bring uint8 images (N,C,H,W) to ``channels`` and ``size`` x ``size``, once, at setup.

    Grey images are replicated to three channels. Other sizes are, with ``fit="resize"``,
    resized bilinearly with antialiasing (what torchvision's ``Resize`` does) and rounded back
    to uint8; with ``fit="pad"`` the object keeps its pixel scale: a smaller side is centred on
    a black canvas, a larger one centre-cropped (MNIST-M was made from MNIST digits padded
    28 -> 32, not resized, so at 28 px the crop gives back MNIST's frame exactly).
    """
    if fit not in FITS:
        raise ValueError(f"pair.fit={fit!r} is unknown; allowed: {', '.join(FITS)}")
    if x.dtype != torch.uint8 or x.dim() != 4:
        return x
    if channels and x.shape[1] != channels:
        if x.shape[1] == 1:
            x = x.expand(-1, channels, -1, -1)
        else:
            raise ValueError(f"cannot convert {x.shape[1]}-channel images to {channels} channels")
    h, w = x.shape[-2:]
    if size and (h, w) != (size, size):
        if fit == "pad":
            ph, pw = max(size - h, 0), max(size - w, 0)
            if ph or pw:
                x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
            top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
            x = x[..., top:top + size, left:left + size]
        else:
            x = torch.cat([
                F.interpolate(x[i:i + chunk].float(), size=(size, size), mode="bilinear",
                              antialias=True, align_corners=False).round_().clamp_(0, 255).to(torch.uint8)
                for i in range(0, len(x), chunk)
            ])
    return x.contiguous()


def epoch_permutation(n: int, seed: int, stream: int, epoch: int) -> torch.Tensor:
    """The permutation of ``range(n)`` used in ``epoch`` of ``stream`` (deterministic)."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + stream * 7_919 + epoch) % (2**63))
    return torch.randperm(n, generator=g)


class BatchStream:
    """Index batches of one split: shuffled per epoch, without replacement, drop-last."""

    def __init__(self, n: int, batch_size: int, seed: int, stream: int, rank: int = 0, world_size: int = 1):
        self.n, self.bs, self.seed, self.stream = n, batch_size, seed, stream
        self.rank, self.world = rank, world_size
        per_rank = len(range(rank, n, world_size))
        self.batches_per_epoch = per_rank // batch_size
        if self.batches_per_epoch < 1:
            raise ValueError(f"split of {n} samples is too small for batch_size={batch_size} "
                             f"on {world_size} process(es)")
        self._epoch, self._perm = -1, None

    def indices(self, k: int) -> torch.Tensor:
        epoch, pos = divmod(k, self.batches_per_epoch)
        if epoch != self._epoch:
            self._perm = epoch_permutation(self.n, self.seed, self.stream, epoch)[self.rank::self.world]
            self._epoch = epoch
        return self._perm[pos * self.bs:(pos + 1) * self.bs]


@dataclass
class DeviceSplit:
    """A split on the training device plus what is needed to turn it into network input."""

    x: torch.Tensor
    y: torch.Tensor
    mean: torch.Tensor | None  # per-channel mean for uint8 images, None for float features

    def __len__(self) -> int:
        return len(self.y)

    def inputs(self, idx: torch.Tensor | slice) -> torch.Tensor:
        x = self.x[idx]
        if self.mean is None:
            return x
        return x.float().div_(255.0).sub_(self.mean)

    def sample(self, k: int, seed: int = 0) -> torch.Tensor:
        """Sorted indices of a seeded sample of ``k`` rows (every row when ``k >= len``)."""
        return torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:k].sort().values

    def batches(self, idx: torch.Tensor | None = None, batch: int = 1024, device=None):
        """:meth:`inputs` of the rows ``idx`` (or all), ``batch`` rows at a time, on ``device``."""
        idx = torch.arange(len(self)) if idx is None else idx
        for a in range(0, len(idx), batch):
            yield self.inputs(idx[a:a + batch].to(self.y.device)).to(device)


class PairBatches:
    """Infinite iterable of training batches ``{src_x, src_y, tgt_x, tgt_y}``.

    ``tgt_y`` is present so that the train-on-target upper bound can use it; the
    unsupervised methods never read it.
    """

    def __init__(self, dm: "DomainPairDataModule"):
        self.dm = dm

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        dm = self.dm
        rank, world = dm.rank_and_world()
        src = BatchStream(len(dm.src_train), dm.batch_size, dm.seed, SRC_STREAM, rank, world)
        tgt = BatchStream(len(dm.tgt_train), dm.batch_size, dm.seed, TGT_STREAM, rank, world)
        k = dm.trainer.global_step if dm.trainer is not None else 0  # resume where we left off
        dev = dm.src_train.x.device
        while True:
            i = src.indices(k).to(dev, non_blocking=True)
            j = tgt.indices(k).to(dev, non_blocking=True)
            yield {
                "src_x": dm.src_train.inputs(i), "src_y": dm.src_train.y[i],
                "tgt_x": dm.tgt_train.inputs(j), "tgt_y": dm.tgt_train.y[j],
            }
            k += 1


class EvalBatches:
    """Sequential batches over this rank's contiguous shard of an evaluation split."""

    def __init__(self, split: DeviceSplit, batch_size: int, rank: int = 0, world: int = 1):
        n = len(split)
        lo, hi = n * rank // world, n * (rank + 1) // world
        self.split, self.bs, self.lo, self.hi = split, batch_size, lo, hi

    def __len__(self) -> int:
        return -(-(self.hi - self.lo) // self.bs)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for a in range(self.lo, self.hi, self.bs):
            s = slice(a, min(a + self.bs, self.hi))
            yield self.split.inputs(s), self.split.y[s]


def batch_too_large(name: str, n: int, batch_size: int) -> ConfigError:
    """A batch takes ``batch_size`` samples of each domain (half of ``data.batch_size``)."""
    return ConfigError(f"data.batch_size={2 * batch_size} takes {batch_size} samples of each domain per step, but "
                       f"{name} has only {n} training samples: set data.batch_size to at most {2 * (n // 2)}")


def hold_out(split: Split, n_val: int, split_seed: int, name: str = "source",
             batch_size: int = 1) -> tuple[Split, Split]:
    """Split ``n_val`` samples off ``split`` (a seeded permutation, independent of the run's seed).

    Returns ``(train, val)``, each in the original order; ``val`` is empty when ``n_val == 0``.
    """
    n = len(split.y)
    if batch_size > n:  # holding out fewer would not help: the batch is larger than the domain
        raise batch_too_large(name, n, batch_size)
    if n_val > n - batch_size:
        raise ValueError(f"data.src_val={n_val} leaves {n - n_val} of {name}'s {n} training samples for "
                         f"training, fewer than a batch ({batch_size}); hold out fewer")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    val, train = perm[:n_val].sort().values, perm[n_val:].sort().values
    return Split(split.x[train], split.y[train]), Split(split.x[val], split.y[val])


class DomainPairDataModule(pl.LightningDataModule):
    """Source and target domains of one pair, harmonised to one input shape."""

    def __init__(self, source: str, target: str, root: str | Path | None = None, batch_size: int = 64,
                 eval_batch_size: int = 1024, channels: int | None = None, image_size: int | None = None,
                 seed: int = 0, device: str | torch.device | None = None, fit: str = "resize",
                 src_val: int = 0, split_seed: int = 0, mean_of: str = "pooled", val_src_samples: int | None = None):
        super().__init__()
        self.source, self.target = source, target
        self.root = root
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.channels, self.image_size = channels, image_size
        if fit not in FITS:
            raise ValueError(f"pair.fit={fit!r} is unknown; allowed: {', '.join(FITS)}")
        self.fit = fit
        self.seed = seed
        self.device = device
        if not isinstance(src_val, int) or isinstance(src_val, bool) or src_val < 0:
            raise ValueError(f"data.src_val={src_val!r}: give the number of source training samples to hold "
                             f"out for validation (an integer >= 0; 0 holds none out)")
        self.src_val_size, self.split_seed = src_val, split_seed
        #: source test images the evaluations during training score (a fixed sample; None: all).
        #: The source curve only shows that the labelled task is kept; the final test scores all.
        self.val_src_samples = val_src_samples
        if mean_of not in MEANS:
            raise ValueError(f"data.mean_of={mean_of!r} is unknown; allowed: {', '.join(MEANS)} (pooled: both "
                             f"domains' training images, the default; source: the source's only)")
        self.mean_of = mean_of
        self.num_classes = get_domain(source).num_classes
        if get_domain(target).num_classes != self.num_classes:
            raise ValueError(f"source {source} has {self.num_classes} classes but target {target} has "
                             f"{get_domain(target).num_classes}")
        self._cpu: dict[tuple[str, str], Split] | None = None
        self._on: torch.device | None = None

    # -- helpers -------------------------------------------------------------------------
    def rank_and_world(self) -> tuple[int, int]:
        t = self.trainer
        return (t.global_rank, t.world_size) if t is not None else (0, 1)

    def _device(self) -> torch.device:
        if self.device is not None:
            return torch.device(self.device)
        if self.trainer is not None:
            return self.trainer.strategy.root_device
        return torch.device("cpu")

    def _load(self, name: str, split: str) -> Split:
        s = load_split(name, split, self.root)
        return Split(harmonise(s.x, self.channels, self.image_size, fit=self.fit), s.y)

    def prepare(self) -> None:
        """Load (building caches on first use) and harmonise both domains, on the CPU."""
        if self._cpu is not None:
            return
        raw = {(d, s): self._load(name, s) for d, name in (("src", self.source), ("tgt", self.target))
               for s in ("train", "test")}
        raw["src", "train"], raw["src", "val"] = hold_out(raw["src", "train"], self.src_val_size, self.split_seed,
                                                         self.source, self.batch_size)
        if len(raw["tgt", "train"].y) < self.batch_size:
            raise batch_too_large(self.target, len(raw["tgt", "train"].y), self.batch_size)
        shapes = {f"{d}/{s}": tuple(v.x.shape[1:]) for (d, s), v in raw.items() if len(v.y)}
        if len(set(shapes.values())) != 1:
            raise ValueError(f"source and target inputs differ in shape {shapes}; set pair.channels and "
                             f"pair.image_size so both domains are converted to one shape")
        self._cpu = raw

    @property
    def input_shape(self) -> tuple[int, ...]:
        self.prepare()
        return tuple(self._cpu["src", "train"].x.shape[1:])

    # -- Lightning hooks -----------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        dev = self._device()
        if self._on is not None and self._on == dev:
            return
        self.prepare()
        raw = self._cpu
        mean = None
        if raw["src", "train"].x.dtype == torch.uint8:
            # The paper's only preprocessing: subtract the overall (per-channel) mean of the
            # pooled training images of both domains (target images are unlabelled, so allowed);
            # data.mean_of=source: of the source's training images only (no target image seen).
            used = [v for k, v in raw.items() if k[1] == "train" and (self.mean_of == "pooled" or k[0] == "src")]
            tot = sum(v.x.double().sum(dim=(0, 2, 3)) for v in used)
            cnt = sum(v.x[:, 0].numel() for v in used)
            mean = (tot / cnt / 255.0).float().view(-1, 1, 1).to(dev)
        ds = {k: DeviceSplit(v.x.to(dev), v.y.to(dev), mean) for k, v in raw.items()}
        self.src_train, self.src_test = ds["src", "train"], ds["src", "test"]
        self.tgt_train, self.tgt_test = ds["tgt", "train"], ds["tgt", "test"]
        #: source validation split held out from source training (empty when data.src_val=0):
        #: the only labelled data a label-free model-selection rule may score on
        self.src_val = ds["src", "val"]
        self.src_test_sample = self.src_test
        if self.val_src_samples is not None and self.val_src_samples < len(self.src_test):
            rows = self.src_test.sample(self.val_src_samples, self.split_seed)
            self.src_test_sample = DeviceSplit(self.src_test.x[rows.to(dev)], self.src_test.y[rows.to(dev)], mean)
        self._on = dev

    def split(self, domain: str, split: str) -> DeviceSplit:
        """``split`` ("train", "test", or "val" for the source) of ``domain`` ("src" or "tgt"),
        on the device, mean subtracted: what methods and scores read after ``setup``."""
        key = f"{domain}_{split}"
        if key not in ("src_train", "src_test", "src_val", "tgt_train", "tgt_test"):
            raise ValueError(f"no split {split!r} of domain {domain!r}: domains src|tgt, splits train|test (val: src)")
        return getattr(self, key)

    def train_dataloader(self) -> PairBatches:
        return PairBatches(self)

    def _eval(self, src: DeviceSplit) -> list[EvalBatches]:
        rank, world = self.rank_and_world()
        return [EvalBatches(src, self.eval_batch_size, rank, world),
                EvalBatches(self.tgt_test, self.eval_batch_size, rank, world)]

    def val_dataloader(self) -> list[EvalBatches]:
        """The evaluations during training: all target test images, the source test sample."""
        return self._eval(self.src_test_sample)

    def test_dataloader(self) -> list[EvalBatches]:
        return self._eval(self.src_test)
