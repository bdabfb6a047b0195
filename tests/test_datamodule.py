"""The tensor data path: deterministic batches, disjoint DDP shards, resume position, preprocessing."""

import pytest
import torch

from dann.data import DomainPairDataModule
from dann.data.datamodule import BatchStream, harmonise


def test_batch_k_is_a_pure_function_of_seed_stream_and_k():
    a = BatchStream(1000, 64, seed=0, stream=0)
    b = BatchStream(1000, 64, seed=0, stream=0)
    seq_a = [a.indices(k) for k in range(40)]  # crosses several epochs (15 batches each)
    seq_b = [b.indices(k) for k in reversed(range(40))][::-1]  # any access order
    assert all(torch.equal(x, y) for x, y in zip(seq_a, seq_b))
    c = BatchStream(1000, 64, seed=1, stream=0)
    assert not torch.equal(a.indices(0), c.indices(0))
    d = BatchStream(1000, 64, seed=0, stream=1)  # target stream differs from source stream
    assert not torch.equal(a.indices(0), d.indices(0))


def test_epoch_covers_each_sample_at_most_once_and_reshuffles():
    s = BatchStream(1000, 64, seed=0, stream=0)
    epoch0 = torch.cat([s.indices(k) for k in range(s.batches_per_epoch)])
    assert len(epoch0) == 15 * 64 and len(set(epoch0.tolist())) == len(epoch0)
    epoch1 = torch.cat([s.indices(k) for k in range(s.batches_per_epoch, 2 * s.batches_per_epoch)])
    assert not torch.equal(epoch0, epoch1)


def test_ddp_ranks_get_disjoint_shares():
    world = 2
    per_rank = [torch.cat([BatchStream(1000, 32, 0, 0, rank=r, world_size=world).indices(k) for k in range(15)])
                for r in range(world)]
    assert not set(per_rank[0].tolist()) & set(per_rank[1].tolist())


def test_too_small_split_is_a_clear_error():
    with pytest.raises(ValueError, match="too small for batch_size=64"):
        BatchStream(100, 64, 0, 0, rank=0, world_size=2)


def test_harmonise_replicates_grey_and_resizes():
    x = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    y = harmonise(x, 3, 32)
    assert y.shape == (5, 3, 32, 32) and y.dtype == torch.uint8
    assert torch.equal(y[:, 0], y[:, 2])
    with pytest.raises(ValueError, match="3-channel"):
        harmonise(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), 1, None)


def test_datamodule_batches_and_resume_position():
    dm = DomainPairDataModule("moons", "moons_rot35", batch_size=32, seed=5)
    dm.setup("fit")
    assert dm.input_shape == (2,) and dm.num_classes == 2
    it = iter(dm.train_dataloader())
    batches = [next(it) for _ in range(12)]
    assert batches[0]["src_x"].shape == (32, 2) and set(batches[0]) == {"src_x", "src_y", "tgt_x", "tgt_y"}
    # A fresh iterator at global_step 7 (what a resumed run sees) continues with batch 7.
    class FakeTrainerStep:  # only the attributes PairBatches reads
        global_step, global_rank, world_size = 7, 0, 1
    dm2 = DomainPairDataModule("moons", "moons_rot35", batch_size=32, seed=5)
    dm2.setup("fit")
    dm2.trainer = FakeTrainerStep()
    b7 = next(iter(dm2.train_dataloader()))
    assert all(torch.equal(b7[k], batches[7][k]) for k in b7)


def test_mismatched_class_counts_are_refused():
    from dann.data.domains import Domain, Split, register

    register(Domain("_three_class_toy", 3, lambda root, split: Split(torch.zeros(4, 2), torch.zeros(4).long()),
                    cache=False))
    with pytest.raises(ValueError, match="has 2 classes but target _three_class_toy has 3"):
        DomainPairDataModule("moons", "_three_class_toy")


def test_harmonise_pad_keeps_pixel_scale():
    x = torch.randint(1, 256, (2, 1, 28, 28), dtype=torch.uint8)
    y = harmonise(x, 3, 32, fit="pad")
    assert y.shape == (2, 3, 32, 32)
    assert torch.equal(y[:, 0, 2:30, 2:30], x[:, 0]) and y[:, :, :2].sum() == 0 and y[:, :, :, 30:].sum() == 0
    with pytest.raises(ValueError, match="pair.fit='crop' is unknown"):
        harmonise(x, 3, 32, fit="crop")


def test_harmonise_pad_centre_crops_larger_images_back_to_the_padded_frame():
    """MNIST-M's 32 px images are MNIST's 28 px digits padded by 2: at 28 px, pad crops that frame back."""
    x = torch.randint(1, 256, (2, 1, 28, 28), dtype=torch.uint8)
    padded = harmonise(x, 3, 32, fit="pad")
    assert torch.equal(harmonise(padded, 3, 28, fit="pad"), x.expand(-1, 3, -1, -1))
    wide = torch.randint(0, 256, (1, 3, 24, 40), dtype=torch.uint8)  # one side padded, the other cropped
    y = harmonise(wide, 3, 32, fit="pad")
    assert y.shape == (1, 3, 32, 32) and torch.equal(y[:, :, 4:28], wide[:, :, :, 4:36]) and y[:, :, :4].sum() == 0
