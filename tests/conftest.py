"""Shared fixtures: compose the real Hydra config and shrink it for tests."""

from __future__ import annotations

import os

import pytest
from hydra import compose, initialize_config_dir

from dann.config import CONF_DIR

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

FAST = ["logger=none", "trainer.enable_progress_bar=false", "trainer.accelerator=cpu"]


def make_cfg(output_dir, *overrides: str):
    """The real config, as ``dann-train`` would compose it, with ``overrides`` applied."""
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        return compose("train", overrides=[f"output_dir={output_dir}", *FAST, *overrides])


@pytest.fixture
def cfg_factory(tmp_path):
    def factory(*overrides: str, sub: str = "run"):
        return make_cfg(tmp_path / sub, *overrides)

    return factory


def assert_last_checkpoint_matches_record(run_dir, rec, cfg, steps: int) -> None:
    """A moons run's ``last.ckpt``, loaded into a method built from ``cfg`` and evaluated in this one
    process, gives exactly the record's test accuracies (e.g. after a sharded DDP evaluation)."""
    import torch

    from dann.data import DomainPairDataModule
    from dann.run.build import build_method
    from dann.run.checkpoints import load_checkpoint

    dm = DomainPairDataModule("moons", "moons_rot35", batch_size=16)
    dm.setup("test")
    model = build_method(cfg, dm.input_shape, dm.num_classes)
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == steps
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    with torch.no_grad():
        for dom, split in (("tgt", dm.tgt_test), ("src", dm.src_test)):
            acc = (model(split.inputs(slice(None))).argmax(1) == split.y).float().mean().item()
            assert acc == pytest.approx(rec["metrics"][f"test/{dom}_acc"], abs=1e-6), dom
