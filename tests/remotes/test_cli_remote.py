"""``curate push | pull | list remote | delete --remote``: thin commands over the remote API."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import collect_cartpole, record_cartpole

from collector import storage
from curation.api import load_dataset
from curation.cli import main


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A folder remote, made the default through $HARVEST_REMOTE."""
    folder = tmp_path / "shared"
    folder.mkdir()
    monkeypatch.setenv("HARVEST_REMOTE", f"file://{folder}")
    return f"file://{folder}"


def test_push_list_pull_delete(capsys: pytest.CaptureFixture, shared: str, tmp_path: Path) -> None:
    record_cartpole("cart/a-v0", 3)
    record_cartpole("cart/b-v0", 2)
    code, out, _ = run(capsys, "push", "cart/a-v0", "cart/b-v0")
    assert code == 0
    assert out.splitlines()[0].startswith(
        f"cart/a-v0 pushed to {shared}: 2 file(s)"
    )  # shard, index
    code, out, _ = run(capsys, "push", "cart/a-v0")
    assert (code, out) == (0, f"cart/a-v0 is up to date at {shared}\n")

    code, out, _ = run(capsys, "list", "remote", "--json")
    rows = json.loads(out)
    assert [(r["name"], r["episodes"]) for r in rows] == [("cart/a-v0", 3), ("cart/b-v0", 2)]
    code, out, _ = run(capsys, "list", shared)
    assert code == 0 and f"harvest datasets on {shared}" in out and "cart/b-v0" in out

    other = tmp_path / "other-root"
    code, out, _ = run(capsys, "pull", "cart/a-v0", "--root", str(other))
    assert code == 0 and out.startswith("cart/a-v0 pulled into")
    assert load_dataset("cart/a-v0", root=other).total_episodes == 3

    code, out, _ = run(capsys, "delete", "cart/a-v0", "--remote", shared, "--yes")
    assert code == 0 and f"deleted cart/a-v0 from {shared}" in out
    assert (
        storage.dataset_path("cart/a-v0") / storage.METADATA_FILE
    ).exists()  # the local copy stays
    code, out, _ = run(capsys, "list", "remote", "--json")
    assert [r["name"] for r in json.loads(out)] == ["cart/b-v0"]


def test_remote_errors_are_one_line(capsys: pytest.CaptureFixture, shared: str) -> None:
    record_cartpole("cart/a-v0", 3)
    cases = [
        (("push", "cart/none-v0"), 1, "no dataset 'cart/none-v0'"),
        (("pull", "cart/none-v0"), 1, "no dataset 'cart/none-v0' on file://"),
        (("push", "cart/a-v0", "--remote", "s3://b"), 2, "unknown scheme 's3'"),
        (("push", "cart/a-v0", "--remote", "file://relative"), 2, "file:///absolute/path"),
        (("list", "remote", "--remote", "file:///no/such/mount"), 1, "does not exist"),
        (("delete", "cart/a-v0", "--remote", shared), 1, "no dataset 'cart/a-v0' on"),
    ]
    for argv, want_code, message in cases:
        code, _, err = run(capsys, *argv)
        assert code == want_code, (argv, err)
        assert err.startswith("curate: error: ") and err.count("\n") == 1, err
        assert message in err, err


def test_delete_remote_asks_without_yes(capsys: pytest.CaptureFixture, shared: str) -> None:
    record_cartpole("cart/a-v0", 3)
    run(capsys, "push", "cart/a-v0")
    code, _, err = run(capsys, "delete", "cart/a-v0", "--remote", shared)
    assert code == 2 and "pass --yes" in err
    code, out, _ = run(capsys, "list", "remote", "--json")
    assert [r["name"] for r in json.loads(out)] == ["cart/a-v0"]


def test_nested_ids_are_one_line(
    capsys: pytest.CaptureFixture, shared: str, tmp_path: Path
) -> None:
    """Issue 16, item 1: push and pull of an id inside or around another print one line."""
    record_cartpole("cart/x-v0/y-v0", 2)
    run(capsys, "push", "cart/x-v0/y-v0")
    other = tmp_path / "other-root"
    collect_cartpole("cart/x-v0", 2, datasets_root=str(other))
    for argv, message in (
        (("push", "cart/x-v0", "--root", str(other)), "would contain dataset 'cart/x-v0/y-v0'"),
        (("pull", "cart/x-v0/y-v0", "--root", str(other)), "would sit inside dataset 'cart/x-v0'"),
    ):
        code, _, err = run(capsys, *argv)
        assert code == 2, (argv, err)
        assert err.startswith("curate: error: ") and err.count("\n") == 1, err
        assert message in err and "pick another id, or delete" in err, err


def test_pull_overwrite_of_a_symlinked_local_dataset_touches_nothing(
    capsys: pytest.CaptureFixture, shared: str, tmp_path: Path, datasets_root: Path
) -> None:
    """Issue 16 item 4: the swap unlinked metadata.json through the link, then left a link."""
    record_cartpole("cart/a-v0", 3)
    assert run(capsys, "push", "cart/a-v0")[0] == 0
    collect_cartpole("cart/a-v0", 2, seed=9, datasets_root=str(tmp_path / "other"))
    path = storage.dataset_path("cart/a-v0")
    moved = tmp_path / "other" / "cart" / "a-v0"
    shutil.rmtree(path)
    path.symlink_to(moved, target_is_directory=True)
    before = sorted((p.name, p.read_bytes()) for p in moved.rglob("*") if p.is_file())
    code, _, err = run(capsys, "pull", "cart/a-v0", "--overwrite")
    assert code == 2 and "is a symbolic link" in err and len(err.strip().splitlines()) == 1
    assert sorted((p.name, p.read_bytes()) for p in moved.rglob("*") if p.is_file()) == before
    assert path.is_symlink()
    assert [p for p in (datasets_root / ".tmp").rglob("*")] == []
