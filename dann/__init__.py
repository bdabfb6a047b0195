"""dann: Domain-Adversarial Neural Networks (Ganin et al., JMLR 2016) and its baselines.

One function, :func:`dann.run.train.train`, composes data, network and method from a Hydra
config, trains with Lightning and writes one results record per run.
"""

import os as _os

__version__ = "0.1.0"

# An OpenMP thread waiting at a barrier should spin only briefly before it sleeps. Spinning long
# (libgomp's default, ~300,000 spins) makes a run beside other PyTorch work several times slower than
# its fair share; sleeping at once (the passive policy) costs an idle 2-thread MNIST step ~30%, since a
# step's small operations leave the threads waiting for microseconds at a time. libgomp, the runtime
# of PyTorch's Linux wheels, takes GOMP_SPINCOUNT over the policy: ~1,000 spins (~10 us) kept most of
# the idle speed (8% short of the long spin) and stayed within the fair share under load
# (experiments/benchmarks/contention.md); other runtimes read the passive policy. Read once, when
# torch first loads, hence here, before; a policy or spin count the user set is kept.
if "OMP_WAIT_POLICY" not in _os.environ and "GOMP_SPINCOUNT" not in _os.environ:
    _os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    _os.environ["GOMP_SPINCOUNT"] = "1000"
