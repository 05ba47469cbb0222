"""Disk full (issue 08, item 4): a clear error, the last commit intact, a resume completes.

``collect`` runs with small commit windows into a filesystem that fills up mid-run: a real
1 MiB tmpfs when this machine lets the test mount one (root in a VM), and always an injected
``ENOSPC`` at the one function every dataset byte goes through (``storage.write_new_file``). The
run must stop with one ``DiskFullError`` line that says the disk is full and how to resume,
leave ``metadata.json`` readable, ``verify`` clean and no temp file behind; the same command
re-run after space is freed completes with exactly the episodes asked for and the
fingerprint of an uninterrupted run.

Issue 16 item 7 adds every other writer: ``curate pull``, ``push`` to ``file://``, ``filter
--into``, ``DataCollector.create_dataset`` and ``curate export`` on a full disk (the tmpfs,
and ENOSPC injected at the os layer), and ``collect``, ``combine`` and ``pull`` on a read-only
root (a tmpfs remounted read-only, and EACCES injected): one ``StorageError`` line each,
nothing half-written.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import read_episodes

from collector import storage
from collector.collect import collect
from collector.errors import DiskFullError, HarvestError, StorageError

EPISODES = 600
DATASET_ID = "full/cart-v0"


def config(root: Path) -> dict[str, Any]:
    """CartPole, one commit (and one ~30 kB shard) per 10 episodes."""
    return {
        "env": "CartPole-v1",
        "episodes": EPISODES,
        "seed": 7,
        "dataset_id": DATASET_ID,
        "datasets_root": str(root),
        "policy": {"_target_": "collector.policies.RandomPolicy"},
        "checkpoint": {"every_episodes": 10, "every_seconds": None, "every_mb": None},
        "storage": {"compression": "none"},
    }


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The fingerprint of the same run on a roomy disk."""
    return collect(config(tmp_path_factory.mktemp("roomy"))).fingerprint


def leftovers(root: Path) -> list[str]:
    """Temp files of a failed write anywhere under ``root``."""
    return sorted(p.name for p in root.rglob("*") if p.name.endswith(".tmp") or ".tmp" in p.parts)


def assert_stopped_cleanly(err: HarvestError, root: Path) -> int:
    """One line naming the full disk and the resume; the last commit reads and verifies."""
    text = str(err)
    assert "\n" not in text
    assert "disk full" in text and "re-run the same command to resume" in text, text
    assert DATASET_ID in text
    meta = storage.read_metadata(storage.dataset_path(DATASET_ID, root), DATASET_ID)
    assert 0 < meta["total_episodes"] < EPISODES
    assert f"({meta['total_episodes']} episodes)" in text
    assert storage.verify_dataset(DATASET_ID, root).ok
    assert leftovers(root) == []
    return int(meta["total_episodes"])


def assert_resumes(root: Path, fingerprint: str) -> None:
    result = collect(config(root))
    assert result.total_episodes == EPISODES
    assert result.new_episodes > 0
    assert result.fingerprint == fingerprint
    assert storage.verify_dataset(DATASET_ID, root).ok
    assert leftovers(root) == []


# ------------------------------------------------------------------------------------------
# a real full filesystem


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, or a skip saying why it cannot be mounted here."""
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root and mount(8); the injected-ENOSPC test runs")
    where = tmp_path / f"tmpfs-{uuid.uuid4().hex[:8]}"
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); the injected test runs")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_full_tmpfs_stops_cleanly_and_resumes_after_space_is_freed(
    small_tmpfs: Path, uninterrupted: str
) -> None:
    root = small_tmpfs / "datasets"
    with pytest.raises(DiskFullError) as info:
        collect(config(root))
    assert isinstance(info.value, OSError) and info.value.exit_code == 1
    assert_stopped_cleanly(info.value, root)
    # free space: grow the filesystem under the dataset without touching a file
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_tmpfs)], check=True)
    assert_resumes(root, uninterrupted)


# ------------------------------------------------------------------------------------------
# an injected ENOSPC at the storage layer (runs everywhere)


class FillAfter:
    """``open`` for ``collector.storage``: from the ``n``-th file it creates, a write puts half
    its bytes on disk and raises ENOSPC, as a filling disk does (reads are left alone)."""

    def __init__(self, n: int) -> None:
        self.n, self.created, self.on = n, 0, True

    def __call__(self, path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        fh = open(path, mode, *args, **kwargs)  # noqa: SIM115 - returned to the caller
        if "w" not in mode:
            return fh
        self.created += 1
        return _HalfWriter(fh) if self.on and self.created >= self.n else fh


class _HalfWriter:
    def __init__(self, fh: Any) -> None:
        self.fh = fh

    def __enter__(self) -> _HalfWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.fh.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fh, name)

    def write(self, data: bytes) -> int:
        self.fh.write(bytes(data[: len(data) // 2]))
        self.fh.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# files created: 1 = the first (empty) commit's metadata.json, then a shard, its index file
# and a metadata.json per 10-episode window; 17 fails window 6's shard, 18 its index, 19 its
# commit
@pytest.mark.parametrize("nth", [17, 18, 19], ids=["shard-write", "index-write", "metadata-commit"])
def test_an_injected_enospc_stops_cleanly_and_the_rerun_resumes(
    nth: int, tmp_path: Path, uninterrupted: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "datasets"
    fill = FillAfter(nth)
    monkeypatch.setattr(storage.durable, "open", fill, raising=False)
    with pytest.raises(DiskFullError) as info:
        collect(config(root))
    assert fill.created >= nth
    assert assert_stopped_cleanly(info.value, root) == 50
    fill.on = False  # space is freed
    assert_resumes(root, uninterrupted)


def test_a_full_quota_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "datasets"
    real = storage.write_new_file
    calls = {"n": 0}

    def quota(path: Path, data: bytes, *, sync: bool = False) -> None:
        calls["n"] += 1
        if calls["n"] > 4:
            raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), str(path))
        real(path, data, sync=sync)

    monkeypatch.setattr(storage.durable, "write_new_file", quota)
    with pytest.raises(DiskFullError, match="disk quota exceeded") as info:
        collect(config(root))
    assert "re-run the same command to resume" in str(info.value)
    assert storage.verify_dataset(DATASET_ID, root).ok


def test_other_os_errors_are_not_called_a_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def denied(path: Path, data: bytes, *, sync: bool = False) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(storage.durable, "write_new_file", denied)
    with pytest.raises(StorageError, match="permission denied") as info:
        collect(config(tmp_path / "datasets"))
    assert not isinstance(info.value, DiskFullError)


# ------------------------------------------------------------------------------------------
# every other writer on a full disk, and on a read-only root (issue 16 item 7): one line
# naming the path, what the errno means and the fix; nothing half-written left behind


CURATE = "import sys; from curation.cli import main; sys.argv[0] = 'curate'; sys.exit(main())"


def fill(where: Path, leave: int) -> Path:
    """Fill the filesystem of ``where`` with one file, then free ``leave`` bytes of it."""
    filler = where / "filler.bin"
    block = b"\0" * (1 << 16)
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(block)
                fh.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC
        fh.truncate(max(fh.tell() - leave, 0))
    return filler


def cartpole(root: Path, dataset_id: str, episodes: int = 60) -> str:
    """A ~200 kB CartPole dataset (uncompressed, 20 episodes a shard) on a roomy disk."""
    conf = config(root)
    conf.update(dataset_id=dataset_id, episodes=episodes)
    conf["checkpoint"] = {"every_episodes": 20, "every_seconds": None, "every_mb": None}
    collect(conf)
    return dataset_id


def curate(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """``curate ARGV`` in process: its exit code and its stderr."""
    from curation.cli import main

    code = main(list(argv))
    return code, capsys.readouterr().err


def assert_one_line(err: str, meaning: str, where: Path) -> None:
    """The CLI printed one error line naming the path, the errno's meaning and the fix."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("curate: error: "), err
    assert meaning in lines[0] and str(where) in lines[0], err
    assert "then run the same command again" in lines[0], err
    assert "Traceback" not in err


def files_under(path: Path) -> list[str]:
    """Every file under ``path`` but lock files and the filler."""
    return sorted(
        str(p.relative_to(path))
        for p in path.rglob("*")
        if p.is_file() and storage.LOCKS_DIR not in p.parts and p.name != "filler.bin"
    )


class FullDisk:
    """A folder ``where`` whose disk ``fill()`` fills (16 KiB left) and ``free()`` empties."""

    def __init__(self, where: Path, kind: str) -> None:
        self.where, self.kind = where, kind
        self._patch = pytest.MonkeyPatch()

    def fill(self) -> None:
        if self.kind == "tmpfs":
            fill(self.where, leave=16 << 10)
        else:  # creating a file under ``where`` fails with ENOSPC
            deny_writes(self._patch, self.where, errno.ENOSPC, dirs=False)

    def free(self) -> None:
        (self.where / "filler.bin").unlink(missing_ok=True)
        self._patch.undo()


@pytest.fixture(params=["tmpfs", "enospc"])
def full_disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FullDisk]:
    """A real 1 MiB tmpfs (skipped where it cannot be mounted), or ENOSPC injected at the os
    layer (``open``/``os.open`` for writing under the folder) everywhere."""
    if request.param == "tmpfs":
        disk = FullDisk(request.getfixturevalue("small_tmpfs"), "tmpfs")
    else:
        (tmp_path / "disk").mkdir()
        disk = FullDisk(tmp_path / "disk", "enospc")
    try:
        yield disk
    finally:
        disk.free()


def test_pull_into_a_full_disk_is_one_line_and_leaves_nothing(
    full_disk: FullDisk, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    remote = f"file://{tmp_path / 'remote'}"
    (tmp_path / "remote").mkdir()
    dsid = cartpole(tmp_path / "roomy", "full/pulled-v0")
    assert (
        curate(capsys, "push", dsid, "--remote", remote, "--root", str(tmp_path / "roomy"))[0] == 0
    )
    root = full_disk.where / "datasets"
    root.mkdir()
    full_disk.fill()
    code, err = curate(capsys, "pull", dsid, "--remote", remote, "--root", str(root))
    assert code == 1
    assert_one_line(err, "the disk is full", full_disk.where)
    assert files_under(root) == []
    assert not storage.dataset_path(dsid, root).exists()


def test_push_to_a_full_file_remote_is_one_line_and_publishes_nothing(
    full_disk: FullDisk, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dsid = cartpole(tmp_path / "roomy", "full/pushed-v0")
    remote = full_disk.where / "remote"
    remote.mkdir()
    full_disk.fill()
    code, err = curate(
        capsys, "push", dsid, "--remote", f"file://{remote}", "--root", str(tmp_path / "roomy")
    )
    assert code == 1
    assert_one_line(err, "the disk is full", remote)
    assert [
        f for f in files_under(remote) if f.endswith(".tmp") or f.endswith(storage.METADATA_FILE)
    ] == []


def test_filter_into_on_a_full_disk_is_one_line_and_leaves_no_dataset(
    full_disk: FullDisk, capsys: pytest.CaptureFixture[str]
) -> None:
    root = full_disk.where / "datasets"
    dsid = cartpole(root, "full/source-v0", episodes=100)
    before = files_under(root)
    full_disk.fill()
    code, err = curate(
        capsys,
        "filter",
        dsid,
        "--where",
        "id % 3 == 0",
        "--into",
        "full/some-v0",
        "--root",
        str(root),
    )
    assert code == 1
    assert_one_line(err, "the disk is full", root)
    assert files_under(root) == before
    assert not storage.dataset_path("full/some-v0", root).exists()


def test_create_dataset_on_a_full_disk_keeps_the_episodes_for_a_retry(full_disk: FullDisk) -> None:
    import gymnasium as gym

    from collector.data_collector import DataCollector

    root = full_disk.where / "datasets"
    collector = DataCollector(gym.make("CartPole-v1"), root=root)
    for seed in range(40):
        collector.reset(seed=seed)
        done = False
        while not done:
            *_, terminated, truncated, _ = collector.step(seed % 2)
            done = terminated or truncated
    full_disk.fill()
    with pytest.raises(StorageError, match="the disk is full") as info:
        collector.create_dataset("full/made-v0")
    assert "\n" not in str(info.value) and str(root) in str(info.value)
    assert not storage.dataset_path("full/made-v0", root).exists()
    assert [f for f in files_under(root) if f.endswith(".tmp")] == []
    full_disk.free()  # space is freed: the same call now commits every episode
    summary = collector.create_dataset("full/made-v0")
    assert summary.total_episodes == 40
    assert storage.verify_dataset("full/made-v0", root).ok
    collector.close()


def test_export_to_an_injected_full_minari_root_is_one_storage_error(tmp_path: Path) -> None:
    from curation.minari import to_minari

    roomy = tmp_path / "roomy"
    dsid = cartpole(roomy, "full/exported-v0")
    disk = FullDisk(tmp_path / "minari", "enospc")
    disk.where.mkdir()
    disk.fill()
    try:
        with pytest.raises(StorageError, match="the disk is full") as info:
            to_minari(dsid, minari_root=disk.where, root=roomy)
    finally:
        disk.free()
    assert "\n" not in str(info.value) and str(disk.where) in str(info.value)
    assert list(disk.where.iterdir()) == []


def test_export_to_a_full_minari_root_is_one_line_not_a_crash(
    small_tmpfs: Path, tmp_path: Path
) -> None:
    from helpers import cli_env

    roomy = tmp_path / "roomy"
    dsid = cartpole(roomy, "full/exported-v0")
    minari = small_tmpfs / "minari"
    minari.mkdir()
    fill(small_tmpfs, leave=16 << 10)
    done = subprocess.run(  # a crash inside HDF5 would take the test process with it
        [sys.executable, "-c", CURATE, "export", dsid, "--minari-root", str(minari)],
        env=cli_env(roomy),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert_one_line(done.stderr, "the disk is full", minari)
    assert files_under(minari) == []
    assert [p.name for p in minari.iterdir() if p.name != "filler.bin"] == []


# -- read-only roots --------------------------------------------------------------------------
# As root, chmod 0555 does not stop a write, so a read-only root is either a real tmpfs
# remounted read-only (EROFS; where this machine lets the test mount one) or, everywhere,
# EACCES injected at the os layer (os.open, os.mkdir and open for writing under the root), as
# a root owned by another user gives.


def _under(path: Any, root: Path) -> bool:
    try:
        return Path(os.path.abspath(os.fspath(path))).is_relative_to(root)
    except TypeError:  # a file descriptor
        return False


def deny_writes(
    monkeypatch: pytest.MonkeyPatch, root: Path, code: int = errno.EACCES, *, dirs: bool = True
) -> None:
    """Every attempt to create or write a file (and with ``dirs`` a folder) under ``root``
    fails with ``code``."""
    import builtins

    real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT

    def denied(path: Any) -> PermissionError:
        return OSError(code, os.strerror(code), os.fspath(path))

    def open_(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if _under(file, root) and any(c in mode for c in "wax+"):
            raise denied(file)
        return real_open(file, mode, *args, **kwargs)

    def os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if _under(path, root) and flags & write_flags:
            raise denied(path)
        return real_os_open(path, flags, *args, **kwargs)

    def mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
        if dirs and _under(path, root):
            raise denied(path)
        real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(os, "mkdir", mkdir)


@pytest.fixture(params=["ro-tmpfs", "eacces"])
def read_only(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """``(root, make_read_only, meaning)``: fill ``root`` first, then call ``make_read_only()``."""
    if request.param == "eacces":
        root = tmp_path / "datasets"
        monkeypatch = request.getfixturevalue("monkeypatch")
        yield root, lambda: deny_writes(monkeypatch, root), "permission denied"
        return
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root and mount(8); the injected-EACCES case runs")
    where = tmp_path / f"ro-{uuid.uuid4().hex[:8]}"
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); the injected test runs")

    def make_read_only() -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)

    try:
        yield where / "datasets", make_read_only, "the filesystem is read-only"
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_collect_into_a_read_only_root_is_one_storage_error(read_only: Any) -> None:
    root, make_read_only, meaning = read_only
    cartpole(root, "ro/kept-v0", episodes=20)
    before = files_under(root)
    make_read_only()
    for dsid in ("ro/kept-v0", "ro/new-v0"):  # resume an existing dataset, start a new one
        conf = config(root)
        conf.update(dataset_id=dsid, episodes=40)
        with pytest.raises(StorageError, match=re.escape(meaning)) as info:
            collect(conf)
        assert "\n" not in str(info.value) and str(root) in str(info.value)
        assert "then run the same command again" in str(info.value)
    assert files_under(root) == before


def test_combine_and_pull_into_a_read_only_root_are_one_line(
    read_only: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, make_read_only, meaning = read_only
    a, b = cartpole(root, "ro/a-v0", episodes=20), cartpole(root, "ro/b-v0", episodes=20)
    remote = f"file://{tmp_path / 'remote'}"
    (tmp_path / "remote").mkdir()
    pulled = cartpole(tmp_path / "roomy", "ro/pulled-v0", episodes=20)
    assert (
        curate(capsys, "push", pulled, "--remote", remote, "--root", str(tmp_path / "roomy"))[0]
        == 0
    )
    before = files_under(root)
    make_read_only()
    code, err = curate(capsys, "combine", a, b, "--into", "ro/both-v0", "--root", str(root))
    assert code == 1
    assert_one_line(err, meaning, root)
    code, err = curate(capsys, "pull", pulled, "--remote", remote, "--root", str(root))
    assert code == 1
    assert_one_line(err, meaning, root)
    assert files_under(root) == before


# files create_dataset creates: 1 = the last spill, 2 = the first (empty) commit's
# metadata.json, 3 = the first adopted spill's index file, then the others', then the commit
# that adopts the spills (0: that one)
@pytest.mark.parametrize(
    "nth", [1, 2, 3, 0], ids=["spill", "first-commit", "adopting-index", "adopting-commit"]
)
def test_create_dataset_failing_at_each_write_keeps_every_episode(
    nth: int, datasets_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gymnasium as gym

    from collector.data_collector import DataCollector

    collector = DataCollector(gym.make("CartPole-v1"), spill_bytes=20_000)
    for seed in range(30):  # some episodes spilled already, the rest in memory
        collector.reset(seed=seed)
        done = False
        while not done:
            *_, terminated, truncated, _ = collector.step(seed % 2)
            done = terminated or truncated
    if nth == 0:
        spills = [p for p in files_under(datasets_root) if p.endswith(".h5")]
        nth = 2 + len(spills) + 1 + 1  # (one more spill at create_dataset)
    fill = FillAfter(nth)
    monkeypatch.setattr(storage.durable, "open", fill, raising=False)
    with pytest.raises(StorageError, match="the disk is full"):
        collector.create_dataset("full/made-v0")
    assert fill.created == nth
    assert not storage.dataset_path("full/made-v0").exists()
    assert [f for f in files_under(datasets_root) if f.endswith(".tmp")] == []
    fill.on = False  # space is freed
    summary = collector.create_dataset("full/made-v0")
    assert summary.total_episodes == 30
    assert [ep["seed"] for ep in read_episodes("full/made-v0")] == list(range(30))
    assert storage.verify_dataset("full/made-v0").ok
    collector.close()
