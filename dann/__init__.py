"""dann: Domain-Adversarial Neural Networks (Ganin et al., JMLR 2016) and its baselines.

One function, :func:`dann.run.train.train`, composes data, network and method from a Hydra
config, trains with Lightning and writes one results record per run.
"""

__version__ = "0.1.0"
