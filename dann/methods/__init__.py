"""The methods: each a small subclass of :class:`DAMethod` in its own file, named by the
``_target_`` of its ``conf/method/<name>.yaml`` (no registry to edit)."""

from dann.methods.base import DAMethod

__all__ = ["DAMethod"]
