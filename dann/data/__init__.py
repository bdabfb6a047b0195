"""Domains, their cache, and the pair datamodule."""

from dann.data.datamodule import DomainPairDataModule
from dann.data.domains import REGISTRY, Split, get_domain, load_split, register

__all__ = ["DomainPairDataModule", "REGISTRY", "Split", "get_domain", "load_split", "register"]
