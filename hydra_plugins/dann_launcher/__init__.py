"""dann's Hydra launcher (Hydra finds launchers only under the ``hydra_plugins`` namespace)."""
