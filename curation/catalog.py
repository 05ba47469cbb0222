"""The local catalog: which datasets are under a root, deleting one, and namespaces.

Namespaces are Minari's: the folder part of dataset ids (``cartpole`` in
``cartpole/random-v0``), optionally described by ``<root>/<namespace>/namespace_metadata.json``.
Everything here is storage (it lists, reads and writes files); ``curation.describe`` renders.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

from collector import storage
from collector.errors import (
    CorruptDatasetError,
    DatasetExistsError,
    DatasetIdError,
    DatasetNotFoundError,
    HarvestError,
    HarvestWarning,
    UsageError,
)

__all__ = [
    "NAMESPACE_KEYS",
    "create_namespace",
    "delete_dataset",
    "get_namespace_metadata",
    "list_local_datasets",
    "list_namespaces",
    "read_namespace",
]

#: Keys of ``get_namespace_metadata`` that are not free-form metadata.
NAMESPACE_KEYS = ("namespace", "description", "datasets")


def list_local_datasets(root: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Every dataset under the root, as ``{id: metadata}``, sorted by id."""
    base = storage.datasets_root(root)
    found: dict[str, dict[str, Any]] = {}
    if not base.is_dir():
        return found
    stack = [base]
    while stack:
        folder = stack.pop()
        for child in folder.iterdir():
            if not child.is_dir() or child.name.startswith("."):
                continue
            if (child / storage.METADATA_FILE).is_file():
                dataset_id = child.relative_to(base).as_posix()
                try:
                    storage.parse_dataset_id(dataset_id)
                    found[dataset_id] = storage.read_metadata(child, dataset_id)
                except HarvestError as e:  # one bad folder must not hide the others
                    warnings.warn(f"skipping {child}: {e}", HarvestWarning, stacklevel=2)
            else:
                stack.append(child)
    return dict(sorted(found.items()))


def delete_dataset(dataset_id: str, root: str | Path | None = None) -> None:
    """Delete a local dataset, under its writer lock (a running writer makes this fail).

    A dataset folder or ``data/`` folder that is a symbolic link is refused before anything
    is removed (issue 16 item 4): deleting through the link would remove files that may not
    be this dataset's, and removing only the link would free nothing while saying "deleted".

    Raises:
        DatasetNotFoundError: no such dataset.
        LockHeldError: a writer is using it.
        UsageError: another dataset is nested inside its folder, or the folder or its ``data/``
            is a symbolic link (nothing is deleted).
    """
    path = storage.dataset_path(dataset_id, root)
    with storage.DatasetLock(dataset_id, root):
        storage.read_metadata(path, dataset_id)  # DatasetNotFoundError, with the usual message
        for link in (path, path / storage.DATA_DIR):
            if link.is_symlink():
                raise UsageError(
                    f"not deleting {dataset_id!r}: {link} is a symbolic link (to "
                    f"{os.readlink(link)}); remove the link and the files it points to yourself"
                )
        inner = storage.contained_datasets(dataset_id, root)
        if inner:  # nested by an older harvest: deleting the folder would delete them too
            raise UsageError(
                f"dataset {dataset_id!r} contains dataset {inner[0]!r} at {path}; nothing was "
                f"deleted: delete {inner[0]!r} first"
            )
        # the commit point goes first: a crash mid-delete leaves no half dataset that opens
        (path / storage.METADATA_FILE).unlink()
        shutil.rmtree(path)


def _parents(name: str) -> list[str]:
    """Proper folder prefixes: ``a/b/c-v0`` -> ``["a", "a/b"]``."""
    parts = name.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def _namespace_files(base: Path) -> list[str]:
    """Namespaces with a metadata file under ``base`` (not looking inside datasets)."""
    found = []
    for folder, dirs, files in os.walk(base):
        if storage.METADATA_FILE in files:  # a dataset holds no namespaces
            dirs.clear()
            continue
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel = Path(folder).relative_to(base).as_posix()
        if storage.NAMESPACE_METADATA_FILE in files and rel != ".":
            try:
                found.append(storage.check_namespace(rel))
            except DatasetIdError as e:  # one bad folder must not hide the others
                warnings.warn(f"skipping {folder}: {e}", HarvestWarning, stacklevel=3)
    return found


def _read_namespace_file(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        raise CorruptDatasetError(f"{path} is not UTF-8 JSON ({e}); fix or delete it") from e
    if not isinstance(data, dict):
        raise CorruptDatasetError(f"{path} does not hold a JSON object; fix or delete it")
    return data


def create_namespace(
    namespace: str,
    description: str | None = None,
    *,
    root: str | os.PathLike[str] | None = None,
    exist_ok: bool = False,
    **metadata: Any,
) -> dict[str, Any]:
    """Write ``<root>/<namespace>/namespace_metadata.json``; return its content.

    The file holds ``{"namespace": ..., "description": ..., **metadata}`` (strict JSON). With
    ``exist_ok`` an existing file is updated: given keys replace stored ones, and a
    ``description`` of None keeps the stored one.

    Raises:
        DatasetIdError: ``namespace`` is not ``segment[/segment...]`` or ends in ``-vN``.
        DatasetExistsError: the namespace has a metadata file and ``exist_ok`` is false.
        UsageError: the namespace would lie inside a dataset, or ``metadata`` is not JSON.
    """
    storage.check_namespace(namespace)
    base = storage.datasets_root(root)
    for prefix in [*_parents(namespace), namespace]:
        if (base / prefix / storage.METADATA_FILE).is_file():
            raise UsageError(
                f"namespace {namespace!r} would be inside dataset {prefix!r}; a dataset cannot "
                "hold a namespace, pick another name"
            )
    if "datasets" in metadata:
        raise UsageError("'datasets' is listed from the folders, not stored; use another key")
    file = base / namespace / storage.NAMESPACE_METADATA_FILE
    old = _read_namespace_file(file)
    if old is not None and not exist_ok:
        raise DatasetExistsError(
            f"namespace {namespace!r} already exists ({file}); pass exist_ok=True "
            "(--exist-ok) to update it"
        )
    old = old or {}
    content = {
        "namespace": namespace,
        "description": old.get("description") if description is None else description,
    }
    content.update((k, v) for k, v in {**old, **metadata}.items() if k not in content)
    try:
        data = storage.dumps_metadata(content).encode()
    except (TypeError, ValueError) as e:
        raise UsageError(f"namespace metadata must be strict JSON: {e}") from e
    file.parent.mkdir(parents=True, exist_ok=True)
    storage.atomic_write(file, data)
    return content


def list_namespaces(root: str | os.PathLike[str] | None = None) -> list[str]:
    """Sorted namespaces under the root: folders of dataset ids and of namespace files."""
    names = {p for dataset_id in list_local_datasets(root) for p in _parents(dataset_id)}
    for ns in _namespace_files(storage.datasets_root(root)):
        names.update([ns, *_parents(ns)])
    return sorted(names)


def read_namespace(
    namespace: str, root: str | os.PathLike[str] | None
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The namespace's metadata (plus ``datasets``) and its datasets' ``{id: metadata}``.

    Raises:
        DatasetIdError: an invalid namespace.
        DatasetNotFoundError: nothing under that namespace (no file, no datasets).
    """
    storage.check_namespace(namespace)
    base = storage.datasets_root(root)
    stored = _read_namespace_file(base / namespace / storage.NAMESPACE_METADATA_FILE)
    metas = {k: v for k, v in list_local_datasets(root).items() if k.startswith(namespace + "/")}
    if (
        stored is None
        and not metas
        and not any(ns.startswith(namespace + "/") for ns in _namespace_files(base))
    ):
        raise DatasetNotFoundError(
            f"no namespace {namespace!r} under {base} (no {storage.NAMESPACE_METADATA_FILE}, no "
            f"datasets); create it with `curate namespace create {namespace}`"
        )
    info = {"namespace": namespace, "description": None, **(stored or {})}
    info.update(namespace=namespace, datasets=sorted(metas))
    return info, metas


def get_namespace_metadata(
    namespace: str, root: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """The namespace file's content plus ``datasets``: the ids under it, at any depth.

    Raises:
        DatasetIdError: an invalid namespace.
        DatasetNotFoundError: nothing under that namespace (no file, no datasets).
    """
    return read_namespace(namespace, root)[0]
