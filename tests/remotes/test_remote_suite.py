"""The one remote suite: every backend (folder, GCS emulator, local Hub) passes the same tests.

Datasets go up and come back through the real clients and servers; ground truth is the local
dataset (``verify`` and episode-by-episode equality after a round trip).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import collect_cartpole

from collector import storage
from collector.errors import (
    CorruptDatasetError,
    DatasetExistsError,
    DatasetNotFoundError,
    HarvestWarning,
    RemoteError,
    UsageError,
)
from curation.api import load_dataset
from curation.catalog import delete_dataset, list_local_datasets
from curation.remotes import (
    delete_remote_dataset,
    list_remote_datasets,
    open_remote,
    pull_dataset,
    push_dataset,
)
from curation.remotes.base import Remote
from remotes.conftest import Backend


def cartpole(dataset_id: str, episodes: int = 12, seed: int = 0) -> str:
    """A CartPole dataset in several shards (one per commit)."""
    return collect_cartpole(dataset_id, episodes, seed=seed, shard_every=4)


def shard_files(dataset_id: str, root: Path | None = None) -> list[str]:
    """The dataset's shards and their index files (issue 18)."""
    meta = storage.read_metadata(storage.dataset_path(dataset_id, root), dataset_id)
    files = storage.dataset_files(meta, dataset_id) + storage.index_files(meta, dataset_id)
    return [rel for rel, _, _ in files]


def assert_same_dataset(a_id: str, b_root: Path) -> None:
    a, b = load_dataset(a_id), load_dataset(a_id, root=b_root)
    assert a.fingerprint == b.fingerprint
    assert a.total_episodes == b.total_episodes
    for ea, eb in zip(a.iterate_episodes(), b.iterate_episodes(), strict=True):
        assert ea.id == eb.id and ea.seed == eb.seed
        np.testing.assert_array_equal(ea.observations, eb.observations)
        np.testing.assert_array_equal(ea.actions, eb.actions)
        np.testing.assert_array_equal(ea.rewards, eb.rewards)
    assert storage.verify_dataset(a_id, b_root).ok


def tree(root: Path) -> list[tuple[str, bytes]]:
    """Every dataset file under ``root`` with its bytes (locks and empty temp folders aside)."""
    return sorted(
        (p.relative_to(root).as_posix(), p.read_bytes())
        for p in root.rglob("*")
        if p.is_file() and ".locks" not in p.relative_to(root).parts
    )


def no_leftovers(root: Path) -> list[str]:
    tmp = root / ".tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.exists() else []


def test_push_list_pull_round_trip(backend: Backend, elsewhere: Path) -> None:
    cartpole("cart/rand-v0")
    report = push_dataset("cart/rand-v0", backend.uri)
    assert sorted(report.transferred) == sorted(shard_files("cart/rand-v0"))
    assert len(report.transferred) >= 3 and not report.skipped

    listed = list_remote_datasets(backend.uri)
    assert list(listed) == ["cart/rand-v0"]
    local = storage.read_metadata(storage.dataset_path("cart/rand-v0"))
    assert listed["cart/rand-v0"]["fingerprint"] == local["fingerprint"]
    assert open_remote(backend.uri).exists("cart/rand-v0")
    assert not open_remote(backend.uri).exists("cart/other-v0")

    pulled = pull_dataset("cart/rand-v0", backend.uri, root=elsewhere)
    assert pulled.path == elsewhere / "cart" / "rand-v0"
    assert_same_dataset("cart/rand-v0", elsewhere)
    pulled_files = shard_files("cart/rand-v0", elsewhere)
    assert pulled_files == shard_files("cart/rand-v0")
    assert sum(rel.endswith(".idx") for rel in pulled_files) == len(pulled_files) // 2
    assert no_leftovers(elsewhere) == []


def test_push_and_pull_are_idempotent(backend: Backend, elsewhere: Path) -> None:
    cartpole("cart/rand-v0")
    push_dataset("cart/rand-v0", backend.uri)
    again = push_dataset("cart/rand-v0", backend.uri)
    assert again.up_to_date and again.transferred == []
    pull_dataset("cart/rand-v0", backend.uri, root=elsewhere)
    assert pull_dataset("cart/rand-v0", backend.uri, root=elsewhere).up_to_date


def test_interrupted_push_is_invisible_then_resumes(backend: Backend) -> None:
    cartpole("cart/rand-v0", episodes=16)
    files = shard_files("cart/rand-v0")
    with backend.fail_uploads_after(2), pytest.raises((RemoteError, OSError)):
        push_dataset("cart/rand-v0", backend.uri)
    remote = open_remote(backend.uri)
    assert not remote.exists("cart/rand-v0")
    assert list_remote_datasets(backend.uri) == {}

    resumed = push_dataset("cart/rand-v0", backend.uri)
    assert sorted(resumed.transferred + resumed.skipped) == sorted(files)
    if backend.name != "hf":  # the Hub commits atomically: nothing is left to skip, but the
        assert len(resumed.skipped) == 2  # client skips LFS objects it already uploaded
    assert remote.exists("cart/rand-v0")


def test_corrupt_remote_file_fails_pull_and_leaves_nothing(
    backend: Backend, elsewhere: Path
) -> None:
    cartpole("cart/rand-v0")
    push_dataset("cart/rand-v0", backend.uri)
    bad = shard_files("cart/rand-v0")[1]
    backend.corrupt("cart/rand-v0", bad)
    with pytest.raises(CorruptDatasetError, match=bad.split("/")[-1]) as e:
        pull_dataset("cart/rand-v0", backend.uri, root=elsewhere)
    assert "nothing was written locally" in str(e.value)
    assert not (elsewhere / "cart" / "rand-v0").exists()
    assert no_leftovers(elsewhere) == []


def test_different_content_needs_overwrite_and_stale_files_go(
    backend: Backend, elsewhere: Path
) -> None:
    cartpole("cart/rand-v0", seed=0)
    push_dataset("cart/rand-v0", backend.uri)
    old_files = set(shard_files("cart/rand-v0"))
    remote_before = open_remote(backend.uri).metadata("cart/rand-v0")

    delete_dataset("cart/rand-v0")
    cartpole("cart/rand-v0", seed=1)  # other content under the same id
    meta = storage.read_metadata(storage.dataset_path("cart/rand-v0"))

    with pytest.raises(DatasetExistsError, match="--overwrite") as e:
        push_dataset("cart/rand-v0", backend.uri)
    assert "cart/rand-v1" in str(e.value)
    assert open_remote(backend.uri).metadata("cart/rand-v0") == remote_before

    report = push_dataset("cart/rand-v0", backend.uri, overwrite=True)
    new_files = set(shard_files("cart/rand-v0"))
    assert set(report.removed) == old_files - new_files
    remote = open_remote(backend.uri)
    assert remote.metadata("cart/rand-v0")["fingerprint"] == meta["fingerprint"]
    assert set(remote._stat("cart/rand-v0")) == new_files | {storage.METADATA_FILE}
    pull_dataset("cart/rand-v0", backend.uri, root=elsewhere)
    assert_same_dataset("cart/rand-v0", elsewhere)


def test_pull_over_a_different_local_copy_needs_overwrite(
    backend: Backend, elsewhere: Path
) -> None:
    cartpole("cart/rand-v0", seed=0)
    push_dataset("cart/rand-v0", backend.uri)
    other_root = elsewhere
    collect_cartpole("cart/rand-v0", 3, seed=9, datasets_root=str(other_root))
    before = (other_root / "cart" / "rand-v0" / storage.METADATA_FILE).read_bytes()
    with pytest.raises(DatasetExistsError, match="locally"):
        pull_dataset("cart/rand-v0", backend.uri, root=other_root)
    assert (other_root / "cart" / "rand-v0" / storage.METADATA_FILE).read_bytes() == before
    pull_dataset("cart/rand-v0", backend.uri, root=other_root, overwrite=True)
    assert_same_dataset("cart/rand-v0", other_root)
    assert no_leftovers(other_root) == []


def test_delete_and_missing_ids(backend: Backend) -> None:
    cartpole("cart/a-v0", episodes=4)
    cartpole("cart/b-v0", episodes=4, seed=1)
    push_dataset("cart/a-v0", backend.uri)
    push_dataset("cart/b-v0", backend.uri)
    assert list(list_remote_datasets(backend.uri)) == ["cart/a-v0", "cart/b-v0"]
    delete_remote_dataset("cart/a-v0", backend.uri)
    assert list(list_remote_datasets(backend.uri)) == ["cart/b-v0"]
    assert open_remote(backend.uri)._stat("cart/a-v0") == {}
    with pytest.raises(DatasetNotFoundError, match="curate list remote"):
        delete_remote_dataset("cart/a-v0", backend.uri)
    with pytest.raises(DatasetNotFoundError, match="cart/a-v0"):
        pull_dataset("cart/a-v0", backend.uri)


def test_load_dataset_download(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    cartpole("cart/rand-v0", episodes=4)
    push_dataset("cart/rand-v0", backend.uri)
    expected = load_dataset("cart/rand-v0").fingerprint
    monkeypatch.setenv("HARVEST_REMOTE", backend.uri)
    fresh = Path(os.environ["HARVEST_DATASETS"]).parent / "fresh"
    ds = load_dataset("cart/rand-v0", download=True, root=fresh)
    assert ds.fingerprint == expected
    assert (fresh / "cart" / "rand-v0" / storage.METADATA_FILE).exists()


def test_unreachable_remote_is_one_clear_error(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, datasets_root: Path
) -> None:
    cartpole("cart/rand-v0", episodes=4)
    before = tree(datasets_root)
    uri = backend.go_down(monkeypatch)
    for call in (
        lambda: push_dataset("cart/rand-v0", uri),
        lambda: pull_dataset("cart/other-v0", uri),
        lambda: list_remote_datasets(uri),
    ):
        with pytest.raises(RemoteError) as e:
            call()
        assert "\n" not in str(e.value)
    assert tree(datasets_root) == before


def test_hostile_manifest_cannot_write_outside_the_root(backend: Backend, elsewhere: Path) -> None:
    cartpole("cart/rand-v0", episodes=4)
    path = storage.dataset_path("cart/rand-v0")
    meta: dict[str, Any] = json.loads((path / storage.METADATA_FILE).read_text())
    meta["shards"][0]["file"] = "../../../escape.h5"
    storage.atomic_write(path / storage.METADATA_FILE, storage.seal_metadata(meta).encode())
    with pytest.raises(CorruptDatasetError, match="not a plain shard"):
        push_dataset("cart/rand-v0", backend.uri)


def test_a_killed_pull_leaves_nothing_that_opens_and_the_next_one_cleans_up(
    backend: Backend, elsewhere: Path
) -> None:
    cartpole("cart/rand-v0", episodes=4)
    push_dataset("cart/rand-v0", backend.uri)
    staging = elsewhere / ".tmp" / "pull-cart~rand-v0"  # as a kill -9 mid-pull leaves it
    (staging / "data").mkdir(parents=True)
    (staging / "data" / "shard-000000-deadbeef.h5").write_bytes(b"half a file")
    assert list_local_datasets(elsewhere) == {}
    pull_dataset("cart/rand-v0", backend.uri, root=elsewhere)
    assert no_leftovers(elsewhere) == []
    assert_same_dataset("cart/rand-v0", elsewhere)


# -- sizes a remote declares are not trusted (issue 16 item 8) --------------------------------

OVERSIZED = 20 << 20  # stands for the 190 MiB file of the issue


def spy_reads(monkeypatch: pytest.MonkeyPatch, uri: str) -> dict[str, list[int]]:
    """Bytes each download left locally (``_get``) or returned (``_read``), by the real code."""
    cls = type(open_remote(uri))
    seen: dict[str, list[int]] = {"get": [], "read": []}
    real_get, real_read = cls._get, cls._read

    def get(self: Any, dataset_id: str, rel: str, dest: Path, limit: int) -> None:
        try:
            real_get(self, dataset_id, rel, dest, limit)
        finally:
            seen["get"].append(dest.stat().st_size if dest.exists() else 0)

    def read(self: Any, dataset_id: str, rel: str) -> bytes | None:
        data = real_read(self, dataset_id, rel)
        seen["read"].append(len(data or b""))
        return data

    monkeypatch.setattr(cls, "_get", get)
    monkeypatch.setattr(cls, "_read", read)
    return seen


def test_a_shard_larger_than_declared_is_refused_at_its_declared_size(
    backend: Backend, elsewhere: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cartpole("cart/rand-v0", episodes=4)
    push_dataset("cart/rand-v0", backend.uri)
    meta = storage.read_metadata(storage.dataset_path("cart/rand-v0"))
    rel, _, declared = storage.dataset_files(meta, "cart/rand-v0")[0]
    backend.replace("cart/rand-v0", rel, b"\0" * OVERSIZED)
    seen = spy_reads(monkeypatch, backend.uri)
    with pytest.raises(CorruptDatasetError, match="larger than") as e:
        pull_dataset("cart/rand-v0", backend.uri, root=elsewhere)
    assert "\n" not in str(e.value) and rel.split("/")[-1] in str(e.value)
    assert seen["get"] and max(seen["get"]) <= declared + 1 < OVERSIZED
    assert not (elsewhere / "cart" / "rand-v0").exists()
    assert no_leftovers(elsewhere) == []


def test_a_manifest_over_the_cap_is_refused_unread(
    backend: Backend, elsewhere: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cartpole("cart/rand-v0", episodes=4)
    push_dataset("cart/rand-v0", backend.uri)
    cap = 1 << 20  # the real cap (64 MiB) is over the 20 MiB this test uploads
    monkeypatch.setattr(storage.manifest, "METADATA_MAX_BYTES", cap)
    monkeypatch.setattr(storage, "METADATA_MAX_BYTES", cap)
    text = (storage.dataset_path("cart/rand-v0") / storage.METADATA_FILE).read_bytes()
    backend.replace("cart/rand-v0", storage.METADATA_FILE, text + b" " * OVERSIZED)
    seen = spy_reads(monkeypatch, backend.uri)
    with pytest.raises(CorruptDatasetError, match="larger than") as e:
        pull_dataset("cart/rand-v0", backend.uri, root=elsewhere)
    assert "\n" not in str(e.value)
    assert seen["read"] and max(seen["read"]) <= cap + 1
    assert not (elsewhere / "cart" / "rand-v0").exists()


def test_an_empty_object_is_not_a_dataset(backend: Backend, elsewhere: Path) -> None:
    cartpole("cart/rand-v0", episodes=4)
    push_dataset("cart/rand-v0", backend.uri)
    cartpole("cart/other-v0", episodes=4)
    push_dataset("cart/other-v0", backend.uri)
    backend.replace("cart/rand-v0", storage.METADATA_FILE, b"{}")
    with pytest.raises(CorruptDatasetError) as e:
        pull_dataset("cart/rand-v0", backend.uri, root=elsewhere)
    assert "\n" not in str(e.value)
    with pytest.warns(HarvestWarning, match="cart/rand-v0"):
        assert list(list_remote_datasets(backend.uri)) == ["cart/other-v0"]


# -- a dataset never contains another (DESIGN.md section 4; issue 16, item 1) ---------------


def remote_files(uri: str, dataset_id: str) -> dict[str, Any]:
    """A remote dataset's listed files (size and sha256 where kept), for before/after checks."""
    return open_remote(uri)._stat(dataset_id)


def test_push_refuses_an_id_inside_or_around_a_remote_dataset(
    backend: Backend, elsewhere: Path, tmp_path: Path
) -> None:
    cartpole("cart/x-v0/y-v0", episodes=4)
    push_dataset("cart/x-v0/y-v0", backend.uri)
    inner_before = remote_files(backend.uri, "cart/x-v0/y-v0")
    collect_cartpole("cart/x-v0", 4, seed=1, datasets_root=str(elsewhere))
    for overwrite in (False, True):
        with pytest.raises(
            UsageError, match=re.escape("'cart/x-v0' would contain dataset 'cart/x-v0/y-v0'")
        ) as e:
            push_dataset("cart/x-v0", backend.uri, root=elsewhere, overwrite=overwrite)
        assert "pick another id, or delete 'cart/x-v0/y-v0' first" in str(e.value)
    third = tmp_path / "third"
    collect_cartpole("cart/x-v0/y-v0/data/z-v0", 4, seed=2, datasets_root=str(third))
    with pytest.raises(UsageError, match=re.escape("would sit inside dataset 'cart/x-v0/y-v0'")):
        push_dataset("cart/x-v0/y-v0/data/z-v0", backend.uri, root=third)
    assert list(list_remote_datasets(backend.uri)) == ["cart/x-v0/y-v0"]
    assert remote_files(backend.uri, "cart/x-v0/y-v0") == inner_before
    pulled = tmp_path / "pulled"
    pull_dataset("cart/x-v0/y-v0", backend.uri, root=pulled)
    assert_same_dataset("cart/x-v0/y-v0", pulled)


def test_stale_cleanup_and_delete_touch_only_their_own_files(
    backend: Backend, elsewhere: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A remote nested by an older harvest: a push's cleanup and a delete spare the inner one."""
    cartpole("cart/x-v0/y-v0", episodes=4)
    collect_cartpole("cart/x-v0", 4, seed=1, datasets_root=str(elsewhere))
    other = tmp_path / "other"
    collect_cartpole("cart/x-v0", 8, seed=2, shard_every=4, datasets_root=str(other))
    with monkeypatch.context() as m:
        m.setattr(Remote, "_check_nesting", lambda self, dataset_id, files: None)
        push_dataset("cart/x-v0", backend.uri, root=elsewhere)
        push_dataset("cart/x-v0/y-v0", backend.uri)
        inner = remote_files(backend.uri, "cart/x-v0/y-v0")
        report = push_dataset("cart/x-v0", backend.uri, root=other, overwrite=True)
        assert report.removed and all(r.startswith("data/shard-") for r in report.removed)
    assert remote_files(backend.uri, "cart/x-v0/y-v0") == inner
    assert list(list_remote_datasets(backend.uri)) == ["cart/x-v0", "cart/x-v0/y-v0"]

    delete_remote_dataset("cart/x-v0", backend.uri)
    assert list(list_remote_datasets(backend.uri)) == ["cart/x-v0/y-v0"]
    assert remote_files(backend.uri, "cart/x-v0/y-v0") == inner
    pulled = tmp_path / "pulled"
    pull_dataset("cart/x-v0/y-v0", backend.uri, root=pulled)
    assert_same_dataset("cart/x-v0/y-v0", pulled)


def test_pull_refuses_a_dataset_inside_a_local_one(backend: Backend, elsewhere: Path) -> None:
    cartpole("cart/x-v0/y-v0", episodes=4)
    cartpole("cart/w-v0/data/y-v0", episodes=4, seed=1)
    push_dataset("cart/x-v0/y-v0", backend.uri)
    push_dataset("cart/w-v0/data/y-v0", backend.uri)
    collect_cartpole("cart/x-v0", 4, seed=2, datasets_root=str(elsewhere))
    collect_cartpole("cart/w-v0", 4, seed=3, datasets_root=str(elsewhere))
    before = tree(elsewhere)
    for inner, outer in (("cart/x-v0/y-v0", "cart/x-v0"), ("cart/w-v0/data/y-v0", "cart/w-v0")):
        with pytest.raises(
            UsageError, match=re.escape(f"{inner!r} would sit inside dataset {outer!r}")
        ):
            pull_dataset(inner, backend.uri, root=elsewhere, overwrite=True)
    assert tree(elsewhere) == before
    assert no_leftovers(elsewhere) == []
    collect_cartpole("cart/w-v0", 6, seed=3, datasets_root=str(elsewhere))
    assert storage.verify_dataset("cart/w-v0", elsewhere).ok


def test_pull_overwrite_never_deletes_a_local_dataset_nested_under_it(
    backend: Backend, elsewhere: Path, tmp_path: Path
) -> None:
    cartpole("cart/x-v0", episodes=4)
    push_dataset("cart/x-v0", backend.uri)
    collect_cartpole("cart/x-v0", 3, seed=9, datasets_root=str(elsewhere))
    legacy = tmp_path / "legacy"  # a local root nested by an older harvest
    collect_cartpole("cart/x-v0/y-v0", 3, seed=5, datasets_root=str(legacy))
    shutil.copytree(legacy / "cart/x-v0/y-v0", elsewhere / "cart/x-v0/y-v0")
    before = tree(elsewhere)
    with pytest.raises(
        UsageError, match=re.escape("'cart/x-v0' would contain dataset 'cart/x-v0/y-v0'")
    ):
        pull_dataset("cart/x-v0", backend.uri, root=elsewhere, overwrite=True)
    assert tree(elsewhere) == before
    assert storage.verify_dataset("cart/x-v0/y-v0", elsewhere).ok


# -- a remote folder is hostile on push too (issue 16, item 9) ------------------------------


@pytest.mark.parametrize("link", ["cart", "cart/rand-v0", "cart/rand-v0/data"])
def test_push_and_delete_never_follow_a_planted_symlink(
    file_backend: Backend, tmp_path: Path, link: str
) -> None:
    cartpole("cart/rand-v0", episodes=4)
    base = Path(file_backend.uri.removeprefix("file://"))
    outside = tmp_path / "outside"
    outside.mkdir()
    (base / link).parent.mkdir(parents=True, exist_ok=True)
    (base / link).symlink_to(outside, target_is_directory=True)
    with pytest.raises(RemoteError, match="symlink|links to") as e:
        push_dataset("cart/rand-v0", file_backend.uri)
    assert "\n" not in str(e.value)
    assert list(outside.rglob("*")) == []

    # a link planted after a push: delete and a push's cleanup remove nothing through it
    (base / link).unlink()
    push_dataset("cart/rand-v0", file_backend.uri)
    real = base / link
    shutil.copytree(real, outside, dirs_exist_ok=True)
    shutil.rmtree(real)
    real.symlink_to(outside, target_is_directory=True)
    kept = sorted(p.relative_to(outside).as_posix() for p in outside.rglob("*"))
    try:  # refused, or done without reaching through the link
        delete_remote_dataset("cart/rand-v0", file_backend.uri)
    except RemoteError as e:
        assert re.search("symlink|links to", str(e))
    assert sorted(p.relative_to(outside).as_posix() for p in outside.rglob("*")) == kept


# -- a push carries exactly the dataset's episodes (issue 16, item 13) -----------------------


def episode_keys(files: list[Path]) -> set[tuple[int, bytes]]:
    """(seed, content digest) of every episode stored in ``files``, mapped or not."""
    keys = set()
    for file in files:
        if file.name.endswith("idx"):  # a shard's index file (issue 18) holds its table too
            data = file.read_bytes()
            rows = int(np.frombuffer(data, "<u8", 1, 8)[0])
            table = storage.read_index_file(file, storage.index_entry("s.h5", data, rows))
        else:
            table = storage.read_shard_table(file, ("seed", "digest"))
        keys |= {(int(s), bytes(d)) for s, d in zip(table["seed"], table["digest"], strict=True)}
    return keys


def dataset_keys(dataset_id: str, root: Path | None = None) -> set[tuple[int, bytes]]:
    """(seed, content digest) of the episodes a dataset's manifest includes."""
    path = storage.dataset_path(dataset_id, root)
    keys = set()
    for entry in storage.read_metadata(path, dataset_id)["shards"]:
        table = storage.read_shard_table(
            path / storage.DATA_DIR / entry["file"], ("id", "seed", "digest")
        )
        pos, _ = storage.map_shard_ids(entry, table["id"])
        keys |= {(int(table["seed"][p]), bytes(table["digest"][p])) for p in pos}
    return keys


def test_a_pushed_split_carries_none_of_the_held_out_episodes(
    backend: Backend, tmp_path: Path
) -> None:
    from curation.ops import save_dataset, split_dataset

    collect_cartpole("cart/src-v0", 400, shard_every=100, max_episode_steps=5)
    train, held_out = split_dataset(load_dataset("cart/src-v0"), [0.6, 0.4], seed=0)
    saved = save_dataset(train, "cart/train-v0")
    meta = storage.read_metadata(storage.dataset_path("cart/train-v0"))
    assert any("id_map" in e for e in meta["shards"])  # linked shards: held-out rows inside
    local_files = [
        storage.dataset_path("cart/train-v0") / rel for rel in shard_files("cart/train-v0")
    ]
    want = dataset_keys("cart/train-v0")
    assert len(want) == len(train) == 240 and episode_keys(local_files) > want

    push_dataset("cart/train-v0", backend.uri)
    remote = open_remote(backend.uri)
    scanned = tmp_path / "scanned"
    scanned.mkdir()
    uploaded = []
    for rel, listed in remote._stat("cart/train-v0").items():
        if rel != storage.METADATA_FILE:
            uploaded.append(scanned / rel.replace("/", "~"))
            remote._get("cart/train-v0", rel, uploaded[-1], listed.size)
    assert episode_keys(uploaded) == want
    held = {int(s) for s, _ in dataset_keys("cart/src-v0")} - {int(s) for s, _ in want}
    assert len(held) == 160 and not held & {s for s, _ in episode_keys(uploaded)}
    assert remote.metadata("cart/train-v0")["fingerprint"] == saved.fingerprint

    assert push_dataset("cart/train-v0", backend.uri).up_to_date  # compaction is repeatable
    pulled = tmp_path / "pulled"
    pull_dataset("cart/train-v0", backend.uri, root=pulled)
    assert_same_dataset("cart/train-v0", pulled)
    assert no_leftovers(storage.datasets_root()) == []


def test_delete_removes_a_killed_push_s_temporary_files_too(file_backend: Backend) -> None:
    cartpole("cart/rand-v0", episodes=4)
    push_dataset("cart/rand-v0", file_backend.uri)
    folder = Path(file_backend.uri.removeprefix("file://")) / "cart" / "rand-v0"
    (folder / "data" / ".shard-000009-0123abcd.h5.89abcdef.tmp").write_bytes(b"half")
    (folder / storage.METADATA_TMP).write_bytes(b"{")
    (folder / "notes.txt").write_bytes(b"not the dataset's")
    delete_remote_dataset("cart/rand-v0", file_backend.uri)
    assert sorted(p.name for p in folder.rglob("*")) == ["notes.txt"]


def test_push_never_writes_through_a_planted_file_link(
    file_backend: Backend, tmp_path: Path
) -> None:
    cartpole("cart/rand-v0", episodes=4)
    folder = Path(file_backend.uri.removeprefix("file://")) / "cart" / "rand-v0"
    (folder / "data").mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"someone's file")
    (folder / storage.METADATA_TMP).symlink_to(victim)  # the name atomic_write would use
    for rel in shard_files("cart/rand-v0"):
        (folder / rel).symlink_to(victim)
    push_dataset("cart/rand-v0", file_backend.uri, overwrite=True)
    assert victim.read_bytes() == b"someone's file"
    assert not (folder / storage.METADATA_FILE).is_symlink()
    assert open_remote(file_backend.uri).metadata("cart/rand-v0")["total_episodes"] == 4
