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
