"""One root error and a few children; each message says what happened and what to do about it."""

from __future__ import annotations


class AudiosimError(Exception):
    """Root of every error audiosim raises on purpose; the CLIs print it as one line."""

    exit_code = 1


class ConfigError(AudiosimError):
    """A setting, path or option is wrong."""


class DecodeError(AudiosimError):
    """One audio file cannot be turned into a clip; the indexer records it and goes on."""


class ModelError(AudiosimError):
    """The model checkpoint is missing, unreadable, or does not match the collection."""

    @classmethod
    def missing(cls, path: object) -> ModelError:
        return cls(f"model checkpoint not found: {path} (set AUDIOSIM_MODEL or --model to a .pt file)")


class StoreError(AudiosimError):
    """The vector store cannot be reached, is locked, or does not hold what was asked for."""


class FilterError(AudiosimError):
    """A --where expression cannot be parsed or does not fit the payload schema."""


class QueryError(AudiosimError):
    """A query cannot be answered: unknown id, bad vector, empty collection."""
