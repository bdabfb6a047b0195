"""Every pair x method config composes, and its network is built for the pair's input shape."""

from pathlib import Path

import pytest
import torch

from dann.models import build_nets
from dann.config import CONF_DIR, method_class
from dann.errors import ConfigError
from dann.run.build import build_method
from conftest import make_cfg

PAIRS = sorted(p.stem for p in Path(CONF_DIR, "pair").glob("*.yaml"))
METHOD_NAMES = sorted(p.stem for p in Path(CONF_DIR, "method").glob("*.yaml"))

# Flattened feature size of each paper network for its pair's input (PAPER.md's layer lists):
#   mnist 3x32x32: conv5 28 -> pool 14 -> conv5 10 -> pool 5: 48*5*5
#   svhn  3x32x32: 'same' convs, pools 3/2 (pad 1): 32 -> 16 -> 8: 128*8*8
#   gtsrb 3x40x40: conv5 36 -> pool 18 -> conv3 16 -> pool 8 -> conv5 4 -> pool 2: 256*2*2
FEATURE_DIM = {"mnist": 1200, "svhn": 8192, "gtsrb": 1024}


def test_every_pair_and_method_config_exists():
    assert {"moons", "mnist_mnistm", "synnumbers_svhn", "svhn_mnist", "synsigns_gtsrb"} <= set(PAIRS)
    assert {"source_only", "dann", "target_only"} <= set(METHOD_NAMES)


@pytest.mark.parametrize("method", METHOD_NAMES)
@pytest.mark.parametrize("pair", PAIRS)
def test_pair_method_composes_and_instantiates(tmp_path, pair, method):
    cfg = make_cfg(tmp_path, f"pair={pair}", f"method={method}", "seed=3", "trainer.max_steps=7")
    assert cfg.pair.name == pair and cfg.method.name == method and cfg.seed == 3
    assert cfg.trainer.max_steps == 7
    if cfg.pair.channels is None:  # 2-D toy features
        shape = (2,)
    else:
        shape = (cfg.pair.channels, cfg.pair.image_size, cfg.pair.image_size)
    k = 43 if "signs" in pair else (2 if pair == "moons" else 10)
    model = build_method(cfg, shape, k)
    out = model(torch.zeros(2, *shape))
    assert out.shape == (2, k)
    assert model.hparams.max_steps == 7
    if cfg.model.arch in FEATURE_DIM:
        assert build_nets(cfg.model.arch, shape, k).feature_dim == FEATURE_DIM[cfg.model.arch]


def test_paper_optimisation_settings():
    """SGD 0.01/0.9, batch 64+64; annealing off only for the MNIST<->SVHN pairs (the paper)."""
    for pair in ("mnist_mnistm", "synnumbers_svhn", "svhn_mnist", "synsigns_gtsrb"):
        cfg = make_cfg("/tmp/unused", f"pair={pair}")
        assert (cfg.optim.lr, cfg.optim.momentum, cfg.data.batch_size) == (0.01, 0.9, 128), pair
        assert cfg.optim.anneal is (pair != "svhn_mnist"), pair
        assert cfg.method.gamma == 10.0 if cfg.method.name == "dann" else True


def test_default_run_is_two_moons(tmp_path):
    cfg = make_cfg(tmp_path, "experiment=two_moons")
    assert cfg.pair.source == "moons" and cfg.pair.target == "moons_rot35"
    assert cfg.model.arch == "shallow" and cfg.model.hidden == 15


EXPERIMENTS = sorted(p.stem for p in Path(CONF_DIR, "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_configs_compose_and_sweep_known_choices(experiment):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    for group, known in (("method", METHOD_NAMES), ("pair", PAIRS)):
        if group in params:
            assert set(str(params[group]).split(",")) <= set(known), (experiment, group)
    if experiment.startswith("paper_table"):
        assert len(str(params.seed).split(",")) >= 3
        assert set(str(params.method).split(",")) == {"source_only", "sa", "dann", "target_only"}


@pytest.mark.parametrize("arch,shape,k", [("mnist", (3, 32, 32), 10), ("svhn", (3, 32, 32), 10),
                                          ("gtsrb", (3, 40, 40), 43)])
def test_paper_networks_have_no_batch_norm_and_dropout_only_in_svhn(arch, shape, k):
    """The paper's nets have no batch norm; only the SVHN net has dropout (PAPER.md's first pitfall)."""
    nets = build_nets(arch, shape, k)
    kinds = {type(m).__name__ for part in (nets.features, nets.classifier, nets.discriminator) for m in part.modules()}
    assert not any("Norm" in n for n in kinds), kinds
    assert ("Dropout" in kinds) == (arch == "svhn"), kinds


def test_mnist_net_at_28px_has_the_papers_768_features():
    """The 28x28 variant PAPER.md names (pair.image_size=28): conv5 24 -> pool 12 -> conv5 8 -> pool 4: 48*4*4."""
    assert build_nets("mnist", (3, 28, 28), 10).feature_dim == 768


@pytest.mark.parametrize("override, key", [
    ("+model.hiden=20", "model.hiden"),
    ("+pair.imagesize=28", "pair.imagesize"),
    ("+lerning_rate=1", "lerning_rate"),
    ("+method.gama=1", "method.gama"),
    ("+trainer.max_step=20", "trainer.max_step"),
    ("+optim.learning_rate=1", "optim.learning_rate"),
    ("+data.batchsize=8", "data.batchsize"),
    ("+probe.sample=8", "probe.sample"),
    ("+checkpoint.every=8", "checkpoint.every"),
    ("+logger.wandb.projet=x", "logger.wandb.projet"),
    ("+speed.compil=true", "speed.compil"),
    ("+pool.per_gpus=2", "pool.per_gpus"),
    ("seed=-1", "seed=-1"),
    ("trainer.max_steps=abc", "trainer.max_steps='abc'"),
    ("method.gamma=abc", "method.gamma='abc'"),
    ("model.arch=resnet", "model.arch='resnet'"),
    ("pair.fit=stretch", "pair.fit='stretch'"),
    ("method._target_=os.path.join", "is not a subclass of dann.methods.DAMethod"),
    ("method._target_=dann.methods.nope.Nope", "cannot be imported"),
])
def test_every_group_refuses_unknown_keys_and_bad_values_before_data(tmp_path, override, key):
    """One place validates each group: a typo anywhere is a ConfigError naming it (no data is read)."""
    from dann.config import validate
    from dann.errors import ConfigError

    cfg = make_cfg(tmp_path, "pair=mnist_mnistm", "data.root=/nonexistent", override)
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    assert key in str(e.value)


def test_every_shipped_pair_method_and_experiment_config_validates(tmp_path):
    from dann.config import validate

    for pair in PAIRS:
        for method in METHOD_NAMES:
            cfg = make_cfg(tmp_path, f"pair={pair}", f"method={method}")
            if method_class({"name": method}).requires_start:  # DIRT-T: until it names the run it refines
                with pytest.raises(ConfigError, match=r"method\.start is not set"):
                    validate(cfg)
                continue
            validate(cfg)
    for experiment in EXPERIMENTS:
        validate(make_cfg(tmp_path, f"experiment={experiment}"))
