"""Exceptions for bad user input.

Every error the user can fix (a bad flag, a missing data set, a broken checkpoint) is an
``ArgenError``: the CLI prints its one-line message and exits with code 2, without a traceback.
"""


class ArgenError(ValueError):
    """Bad input from the user: the CLI prints the one-line message and exits with code 2."""


class ConfigError(ArgenError):
    """An invalid or inconsistent configuration value."""


class CheckpointError(ArgenError):
    """A checkpoint folder that is missing, incomplete or incompatible."""


class ConvertError(CheckpointError):
    """A foreign checkpoint file (official VAR/MAR/LlamaGen, Inception weights) that is missing, corrupt,
    of another family, of an unknown layout, or holds objects argen will not unpickle."""


class DataError(ArgenError):
    """A data set that is missing, unknown or corrupt."""


class TokenMismatchError(ConfigError):
    """A tokenizer whose tokens are not the ones a generator was built for (kind, grid, codes, scales)."""
