"""dann: Domain-Adversarial Neural Networks (Ganin et al., JMLR 2016) and its baselines.

One function, :func:`dann.run.train.train`, composes data, network and method from a Hydra
config, trains with Lightning and writes one results record per run.
"""

import os as _os

__version__ = "0.1.0"

# An OpenMP thread that finds its core taken should sleep at a barrier, not spin: spinning threads
# make a run beside other PyTorch work several times slower than its fair share
# (experiments/benchmarks/contention.md). PyTorch's OpenMP runtime reads the policy once, when torch
# is first imported, hence here, before; a policy or spin count the user set is kept.
if "OMP_WAIT_POLICY" not in _os.environ and "GOMP_SPINCOUNT" not in _os.environ:
    _os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
