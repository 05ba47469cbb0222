"""The harvest exception family.

Every error a user can cause is a ``HarvestError``; the command-line tools print its message as
one line and exit with ``exit_code`` (2 for usage mistakes, 1 for runtime failures)::

    HarvestError(Exception)
    ├── UsageError (exit 2)                      bad config, override, id, policy, env or space
    │   ├── DatasetIdError(ValueError)           "../x-v0", "/abs-v0", "name" (no version)
    │   ├── UnsupportedSpaceError(TypeError)     Graph, Sequence, OneOf
    │   ├── ConfigMismatchError                  resume with different data-affecting keys
    │   ├── IncompatibleDatasetsError            combine of datasets whose spaces or specs differ
    │   ├── ExpressionError(ValueError)          a filter expression that does not parse or fit
    │   ├── InvalidValueError(ValueError)        an argument out of range, or a value the
    │   │                                        dataset lacks (e.g. reference scores)
    │   └── EpisodeNotFoundError(KeyError)       an episode id the dataset does not hold
    ├── DatasetNotFoundError(FileNotFoundError)
    ├── DatasetExistsError(FileExistsError)
    ├── LockHeldError(BlockingIOError)           another writer holds the dataset lock
    ├── CorruptDatasetError(OSError)             bad metadata.json, missing/changed shard
    ├── FormatVersionError                       written by a newer harvest
    ├── MissingExtraError(ImportError)           ``pip install "harvest[ray]"``
    ├── RemoteError(ConnectionError)             a remote unreachable, refusing or inconsistent
    ├── ReaderError(RuntimeError)                a training iterator's reader process died
    ├── StorageError(OSError)                    a local write failed: disk full, quota,
    │                                            read-only filesystem, permission denied
    └── CollectionError                          an env or policy failed mid-run
        └── DiskFullError(StorageError)          the disk (or quota) filled up mid-run

Extra fields have defaults, so pickle (and so Ray) can rebuild every class from its message.
"""

from __future__ import annotations

__all__ = [
    "CollectionError",
    "ConfigMismatchError",
    "CorruptDatasetError",
    "DatasetExistsError",
    "DatasetIdError",
    "DatasetNotFoundError",
    "DiskFullError",
    "EpisodeNotFoundError",
    "ExpressionError",
    "FormatVersionError",
    "HarvestError",
    "HarvestWarning",
    "IncompatibleDatasetsError",
    "InvalidValueError",
    "LockHeldError",
    "MissingExtraError",
    "ReaderError",
    "RemoteError",
    "StorageError",
    "UnsupportedSpaceError",
    "UsageError",
]


class HarvestError(Exception):
    """Root of every error a harvest user can cause."""

    exit_code: int = 1


class HarvestWarning(UserWarning):
    """Warnings about misuse or lossy recording (e.g. an info value that cannot be stored)."""


class UsageError(HarvestError):
    """The request itself is wrong: config, override, id, policy, environment or space."""

    exit_code = 2


class DatasetIdError(UsageError, ValueError):
    """A dataset id that does not match ``[namespace/...]name-vN``."""


class UnsupportedSpaceError(UsageError, TypeError):
    """A Gymnasium space harvest cannot store (Graph, Sequence, OneOf, custom spaces)."""


class ConfigMismatchError(UsageError):
    """Re-running into an existing dataset with different data-affecting config."""

    def __init__(self, message: str, *, keys: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.keys = keys


class IncompatibleDatasetsError(UsageError):
    """Datasets that cannot be combined; ``differences`` lists each mismatch, one per line."""

    def __init__(self, message: str, *, differences: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.differences = differences


class ExpressionError(UsageError, ValueError):
    """A filter expression that does not parse, names an unknown field or mixes types.

    Raised by ``curation.expr`` (which re-exports it) before any data is read.
    """


class InvalidValueError(UsageError, ValueError):
    """An argument out of its range, or a value the dataset does not have.

    E.g. ``num_workers=-1``, ``sample_episodes`` of more episodes than there are, or
    normalized scores of a dataset without ``ref_min_score``/``ref_max_score``.
    """


class EpisodeNotFoundError(UsageError, KeyError):
    """An episode id the dataset (its snapshot) does not hold.

    A ``KeyError``, as a mapping lookup would raise, that prints its message unquoted.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class DatasetNotFoundError(HarvestError, FileNotFoundError):
    """No dataset with that id under the datasets root."""

    def __init__(self, message: str, *, dataset_id: str | None = None) -> None:
        super().__init__(message)
        self.dataset_id = dataset_id


class DatasetExistsError(HarvestError, FileExistsError):
    """Refusing to replace a dataset that already exists."""

    def __init__(self, message: str, *, dataset_id: str | None = None) -> None:
        super().__init__(message)
        self.dataset_id = dataset_id


class LockHeldError(HarvestError, BlockingIOError):
    """Another process is writing this dataset."""

    def __init__(self, message: str, *, pid: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid


class CorruptDatasetError(HarvestError, OSError):
    """A dataset file is missing, unreadable or does not match its recorded checksum."""


class FormatVersionError(HarvestError):
    """The dataset was written in a newer format than this harvest reads."""


class MissingExtraError(HarvestError, ImportError):
    """An optional feature's dependencies are not installed."""


class RemoteError(HarvestError, ConnectionError):
    """A remote (folder, Hub, bucket) cannot be reached, refuses a request or changed under us."""


class ReaderError(HarvestError, RuntimeError):
    """A reader process of the training iterators died (killed, out of memory); restart it."""


class StorageError(HarvestError, OSError):
    """A write to local storage failed for a reason the user can fix (space, quota, mode).

    ``errno`` is the failed call's (``ENOSPC``, ``EDQUOT``, ``EROFS``, ``EACCES``, ``EPERM``);
    ``path`` names where. Nothing half-written is left behind.
    """

    def __init__(self, message: str, *, path: str | None = None, errno: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        # set after construction: OSError's own (errno, strerror) form would change str()
        self.errno = errno


class CollectionError(HarvestError):
    """An environment or policy failed while collecting; committed data is safe."""


class DiskFullError(CollectionError, StorageError):
    """No space left (or a quota hit) while writing; the last commit is intact, re-run resumes."""
