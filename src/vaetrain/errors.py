"""Errors that the command line reports as one line, before any training starts."""


class ConfigError(ValueError):
    """A setting, path or input that cannot work; the message names the key or file."""
