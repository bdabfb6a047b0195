"""Errors every module may import: this file imports nothing of ours."""


class ConfigError(ValueError):
    """A config value is invalid; the message names the key and the allowed values."""
