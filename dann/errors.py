"""Errors every module may import: this file imports nothing of ours."""


class ConfigError(ValueError):
    """A config value is invalid; the message names the key and the allowed values."""


def check_choice(key: str, value: object, allowed: tuple[str, ...]) -> None:
    """Refuse ``value`` for config ``key`` unless it is one of ``allowed``, naming them."""
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is unknown; allowed: {', '.join(allowed)}")


class CheckpointError(ValueError):
    """A checkpoint is refused or unreadable: it holds more than tensors and plain data (only a
    pickle builds that, and a pickle can run any code), or it is truncated or not a checkpoint."""


class ResumeError(ValueError):
    """A resume is refused: the checkpoint was written with another config or another network."""


class RunDirBusy(RuntimeError):
    """Another process holds the run directory."""
