"""Methods by name. Each is a small subclass of :class:`DAMethod` that adds only its loss."""

from dann.methods.base import DAMethod
from dann.methods.dann import DANN
from dann.methods.sa import SA
from dann.methods.source_only import SourceOnly
from dann.methods.target_only import TargetOnly

METHODS: dict[str, type[DAMethod]] = {
    "source_only": SourceOnly,
    "dann": DANN,
    "target_only": TargetOnly,
    "sa": SA,
}

__all__ = ["DAMethod", "DANN", "SA", "SourceOnly", "TargetOnly", "METHODS"]
