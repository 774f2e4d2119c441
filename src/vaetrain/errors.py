"""Errors that the command line reports as one line, before any training starts."""


class ConfigError(ValueError):
    """A setting, path or input that cannot work; the message names the key or file."""


class PretrainedWeightsUnavailable(ConfigError):
    """A pretrained network's weights are neither cached nor downloadable; the message names the file and
    the folder to put it in."""
