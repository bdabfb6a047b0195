"""Domains, their cache, and the pair datamodule."""

from dann.data.domains import (REGISTRY, ChecksumError, CorruptDataError, DataError, DatasetNotFoundError, Split,
                               UnsafeArchiveError, get_domain, load_split, register)

__all__ = ["DomainPairDataModule", "REGISTRY", "Split", "get_domain", "load_split", "register", "DataError",
           "DatasetNotFoundError", "ChecksumError", "CorruptDataError", "UnsafeArchiveError"]



def __getattr__(name: str):
    # Lazy: the datamodule pulls in Lightning, which `dann-data` does not need (seconds of start-up).
    if name == "DomainPairDataModule":
        from dann.data.datamodule import DomainPairDataModule

        return DomainPairDataModule
    raise AttributeError(f"module 'dann.data' has no attribute {name!r}")


# Domain modules register themselves on import (one line each below).
from dann.data import toy  # noqa: E402,F401
from dann.data import real  # noqa: E402,F401
from dann.data import mnistm  # noqa: E402,F401
from dann.data import custom  # noqa: E402,F401
from dann.data import synth  # noqa: E402,F401
