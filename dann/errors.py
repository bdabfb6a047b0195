"""Errors every module may import: this file imports nothing of ours."""


class ConfigError(ValueError):
    """A config value is invalid; the message names the key and the allowed values."""


class CheckpointError(ValueError):
    """A checkpoint is refused or unreadable: it holds more than tensors and plain data (only a
    pickle builds that, and a pickle can run any code), or it is truncated or not a checkpoint."""


class ResumeError(ValueError):
    """A resume is refused: the checkpoint was written with another config or another network."""


class RunDirBusy(RuntimeError):
    """Another process holds the run directory."""
