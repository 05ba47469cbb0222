"""Dataset ids, roots and paths, and the file names a dataset folder holds.

A dataset is a folder ``<root>/<id>/`` holding ``metadata.json`` (the commit point, replaced
atomically) and ``data/shard-<seq>-<hash8>.h5`` files (immutable, whole episodes, columnar).
See DESIGN.md section 4. This is the one module that knows those names.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Final

from collector.errors import DatasetIdError, UsageError

__all__ = [
    "DATA_DIR",
    "LOCKS_DIR",
    "METADATA_FILE",
    "METADATA_TMP",
    "NAMESPACE_METADATA_FILE",
    "INDEX_FILE_RE",
    "SHARD_FILE_RE",
    "SHARD_RE",
    "SPILL_DIR",
    "TMP_DIR",
    "check_namespace",
    "check_not_nested",
    "contained_datasets",
    "dataset_path",
    "datasets_root",
    "id_ancestors",
    "index_name",
    "is_own_file",
    "nesting_error",
    "parse_dataset_id",
    "shard_name",
    "spill_name",
]


METADATA_FILE: Final = "metadata.json"
METADATA_TMP: Final = "metadata.json.tmp"
#: Namespace description file, at `<root>/<namespace>/` (Minari's name for it).
NAMESPACE_METADATA_FILE: Final = "namespace_metadata.json"
DATA_DIR: Final = "data"
LOCKS_DIR: Final = ".locks"
#: ``<root>/.tmp/``: scratch space of the datasets root (the collector's spill folders, a
#: push's and a pull's staging folders), never a dataset.
TMP_DIR: Final = ".tmp"
#: Where the collector spills (the same folder: ``TMP_DIR``).
SPILL_DIR: Final = TMP_DIR
SHARD_RE: Final = re.compile(r"^shard-(\d{6,})-([0-9a-f]{8})\.h5$")
_SEGMENT = r"[A-Za-z0-9_-]+"
SHARD_FILE_RE: Final = re.compile(r"shard-[A-Za-z0-9_-]+\.h5", re.ASCII)
#: Names of shard index files in ``data/`` (``storage.index``): a shard's name, ``.idx``.
INDEX_FILE_RE: Final = re.compile(r"shard-[A-Za-z0-9_-]+\.idx", re.ASCII)
_ID_RE: Final = re.compile(
    rf"(?:(?P<ns>{_SEGMENT}(?:/{_SEGMENT})*)/)?(?P<name>{_SEGMENT})-v(?P<v>[0-9]+)", re.ASCII
)


def parse_dataset_id(dataset_id: str) -> tuple[str | None, str, int]:
    """Split ``[namespace/...]name-vN`` into (namespace, name, version), refusing anything else.

    >>> parse_dataset_id("cartpole/random-v0")
    ('cartpole', 'random', 0)

    Raises:
        DatasetIdError: for paths (``..``, absolute, backslashes), empty segments or no version.
    """
    if not isinstance(dataset_id, str) or not dataset_id:
        raise DatasetIdError(
            f"dataset id {dataset_id!r} is empty; use [namespace/]name-vN, e.g. cartpole/random-v0"
        )
    match = _ID_RE.fullmatch(dataset_id)
    if match is None:
        if ".." in dataset_id or dataset_id.startswith("/") or "\\" in dataset_id:
            why = "is a path, not an id"
        elif "//" in dataset_id or dataset_id.endswith("/"):
            why = "has an empty segment"
        elif "-v" not in dataset_id.rsplit("/", 1)[-1]:
            why = "has no version suffix"
        else:
            why = "has a character outside [A-Za-z0-9_-] or a bad version"
        raise DatasetIdError(
            f"dataset id {dataset_id!r} {why}; use [namespace/]name-vN with segments of "
            "[A-Za-z0-9_-], e.g. cartpole/random-v0"
        )
    return match["ns"], match["name"], int(match["v"])


def check_namespace(namespace: str) -> str:
    """Return ``namespace`` (``a`` or ``a/b``, segments as in dataset ids) if it is valid.

    >>> check_namespace("cartpole/experts")
    'cartpole/experts'

    Raises:
        DatasetIdError: anything else (paths, empty segments, a version suffix).
    """
    if not isinstance(namespace, str) or not re.fullmatch(
        rf"{_SEGMENT}(?:/{_SEGMENT})*", namespace, re.ASCII
    ):
        raise DatasetIdError(
            f"namespace {namespace!r} is not valid; use segments of [A-Za-z0-9_-] joined by '/', "
            "e.g. cartpole or cartpole/experts"
        )
    if re.search(r"-v[0-9]+$", namespace.rsplit("/", 1)[-1]):
        raise DatasetIdError(
            f"namespace {namespace!r} looks like a dataset id; drop the -vN suffix"
        )
    return namespace


def datasets_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The datasets root: ``root``, else ``$HARVEST_DATASETS``, else ``~/.harvest/datasets``."""
    if root is not None:
        return Path(root)
    env = os.environ.get("HARVEST_DATASETS")
    return Path(env) if env else Path.home() / ".harvest" / "datasets"


def dataset_path(dataset_id: str, root: str | os.PathLike[str] | None = None) -> Path:
    """Folder of ``dataset_id`` under the datasets root (the id is validated first)."""
    parse_dataset_id(dataset_id)
    return datasets_root(root) / dataset_id


def id_ancestors(dataset_id: str) -> list[str]:
    """Every folder prefix of ``dataset_id``, shortest first (ids or not).

    >>> id_ancestors("w-v0/data/y-v0")
    ['w-v0', 'w-v0/data']
    """
    parts = dataset_id.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def nesting_error(dataset_id: str, other: str, where: str) -> UsageError:
    """The refusal of a dataset inside or around another (DESIGN.md section 4)."""
    if other.startswith(dataset_id + "/"):
        how = f"would contain dataset {other!r}"
    else:
        how = f"would sit inside dataset {other!r}"
    return UsageError(
        f"dataset id {dataset_id!r} {how} {where}; a dataset never contains another: pick "
        f"another id, or delete {other!r} first"
    )


def contained_datasets(dataset_id: str, root: str | os.PathLike[str] | None = None) -> list[str]:
    """Ids of the local datasets inside ``dataset_id``'s folder (symlinks are not followed)."""
    base = datasets_root(root)
    path = dataset_path(dataset_id, base)
    found = []
    if path.is_dir():
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            if METADATA_FILE in filenames and Path(dirpath) != path:
                found.append(Path(dirpath).relative_to(base).as_posix())
    return sorted(found)


def check_not_nested(dataset_id: str, root: str | os.PathLike[str] | None = None) -> None:
    """Refuse an id whose folder is inside or around another local dataset's folder.

    A dataset folder is one holding ``metadata.json``. An id inside another dataset (its
    ``data/`` folder included, e.g. ``w-v0/data/y-v0``) would be swept by that dataset's
    cleaners and deleters, and one around others would sweep them.

    Raises:
        UsageError: naming both ids and the fix.
    """
    base = datasets_root(root)
    dataset_path(dataset_id, base)  # validates the id
    for prefix in id_ancestors(dataset_id):
        if (base / prefix / METADATA_FILE).exists():
            raise nesting_error(dataset_id, prefix, f"in {base}")
    inner = contained_datasets(dataset_id, base)
    if inner:
        raise nesting_error(dataset_id, inner[0], f"in {base}")


def is_own_file(rel: str) -> bool:
    """Whether ``rel`` (relative to a dataset folder) is a file a dataset can own.

    Only ``metadata.json`` and plain shard and shard index names directly in ``data/``:
    never anything of a dataset nested below (which cleaners and deleters must leave alone).
    """
    if rel == METADATA_FILE:
        return True
    folder, _, name = rel.partition("/")
    return folder == DATA_DIR and (
        SHARD_FILE_RE.fullmatch(name) is not None or INDEX_FILE_RE.fullmatch(name) is not None
    )


def shard_name(seq: int, sha256: str) -> str:
    """Unique, never-reused shard file name [review 8]."""
    return f"shard-{seq:06d}-{sha256[:8]}.h5"


def index_name(shard_file: str) -> str:
    """The index file name of shard ``shard_file`` (``storage.index``): ``.idx`` for ``.h5``.

    >>> index_name("shard-000003-1a2b3c4d.h5")
    'shard-000003-1a2b3c4d.idx'
    """
    return shard_file.removesuffix(".h5") + ".idx"


def spill_name(seq: int) -> str:
    """The ``seq``-th spill file's name in a collector's spill folder (under ``SPILL_DIR``)."""
    return f"spill-{seq:06d}.h5"
