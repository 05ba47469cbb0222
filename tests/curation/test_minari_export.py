"""``to_minari``: what we write, the real ``minari`` package opens, equal episode by episode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gymnasium import spaces
from helpers import record_cartpole
from minari_zoo import ZOO, ZooEnv, assert_same

from collector.data_collector import DataCollector
from collector.errors import DatasetExistsError, UsageError
from curation.api import load_dataset
from curation.minari import to_minari

minari = pytest.importorskip("minari")


def record(dataset_id: str, obs: spaces.Space, episodes: int = 3, **kw: Any) -> str:
    env = DataCollector(ZooEnv(obs), record_infos=True)
    for i in range(episodes):
        env.reset(seed=2**63 + i if i == 1 else i, options={"level": i, "cfg": {"k": 1.5}})
        done = False
        while not done:
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            done = terminated or truncated
    env.create_dataset(dataset_id, **kw)
    env.close()
    return dataset_id


@pytest.mark.parametrize("data_format", ["hdf5", "arrow", "parquet"])
@pytest.mark.parametrize("kind", sorted(ZOO))
def test_minari_opens_every_space_kind_equal_to_ours(
    kind: str, data_format: str, tmp_path: Path
) -> None:
    dataset_id = record(f"zoo/{kind}-v0", ZOO[kind])
    to_minari(dataset_id, tmp_path, data_format)
    ours = load_dataset(dataset_id)
    mds = _load(tmp_path, dataset_id)
    assert mds.total_episodes == ours.total_episodes and mds.total_steps == ours.total_steps
    assert mds.observation_space == ours.observation_space
    metas = list(mds.storage.get_episode_metadata(range(ours.total_episodes)))
    for ep, theirs, meta in zip(
        ours.iterate_episodes(), mds.iterate_episodes(), metas, strict=True
    ):
        assert theirs.id == ep.id
        for field in ("observations", "actions", "rewards", "terminations", "truncations"):
            assert_same(getattr(ep, field), getattr(theirs, field), field)
        assert meta["seed"] == ep.seed
        assert meta["options"] == {"level": ep.options["level"], "cfg": {"k": 1.5}}
        assert meta["rewards_sum"] == pytest.approx(float(ep.rewards.sum()))
        np.testing.assert_array_equal(theirs.infos["t"], ep.infos["t"])
        assert "_t" not in theirs.infos  # presence masks that are all True stay ours


def _load(root: Path, dataset_id: str) -> Any:
    import os

    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        return minari.load_dataset(dataset_id)
    finally:
        if old is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def test_minari_tools_work_on_an_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, datasets_root: Path
) -> None:
    record("zoo/box-v0", ZOO["box"], episodes=6, author="ann", description="a box")
    record("zoo/other-v0", ZOO["box"], episodes=2)
    minari_root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(minari_root))
    to_minari("zoo/box-v0")
    to_minari(load_dataset("zoo/other-v0"), new_dataset_id="zoo/renamed-v1")
    assert sorted(minari.list_local_datasets()) == ["zoo/box-v0", "zoo/renamed-v1"]
    assert (minari_root / "zoo" / "namespace_metadata.json").read_text() == "{}"
    a = minari.load_dataset("zoo/box-v0")
    assert a.storage.metadata["author"] == {"ann"}
    assert a.storage.metadata["description"] == "a box"
    combined = minari.combine_datasets(
        [a, minari.load_dataset("zoo/renamed-v1")], new_dataset_id="zoo/comb-v0"
    )
    assert combined.total_episodes == 8
    train, test = minari.split_dataset(a, sizes=[4, 2], seed=0)
    assert len(train) + len(test) == 6
    record_cartpole("zoo/cartpole-v0", 2)
    exported = minari.load_dataset(str(to_minari("zoo/cartpole-v0").relative_to(minari_root)))
    assert exported.recover_environment().spec.id == "CartPole-v1"

    with pytest.raises(DatasetExistsError, match="overwrite=True"):
        to_minari("zoo/box-v0")
    to_minari("zoo/box-v0", overwrite=True)
    with pytest.raises(UsageError, match="at least two characters"):
        to_minari("zoo/box-v0", new_dataset_id="z/box-v0")
    with pytest.raises(UsageError, match="Minari's formats are"):
        to_minari("zoo/box-v0", data_format="zarr")


def test_arrow_export_refuses_episodes_minari_would_misread(tmp_path: Path) -> None:
    env = DataCollector(ZooEnv(ZOO["box"], horizon=32_766))
    env.reset(seed=0)
    for _ in range(32_766):
        env.step(0)
    env.create_dataset("zoo/long-v0")
    to_minari("zoo/long-v0", tmp_path, "arrow")  # 32,767 rows: still one record batch
    assert len(_load(tmp_path, "zoo/long-v0")[0]) == 32_766
    env = DataCollector(ZooEnv(ZOO["box"], horizon=32_767))
    env.reset(seed=0)
    for _ in range(32_767):
        env.step(0)
    env.create_dataset("zoo/longer-v0")
    with pytest.raises(UsageError, match="episode 0 of 'zoo/longer-v0' has 32767 steps"):
        to_minari("zoo/longer-v0", tmp_path, "parquet")
    assert to_minari("zoo/longer-v0", tmp_path).is_dir()  # hdf5 has no such limit


def test_curate_export(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from curation.cli import main

    record_cartpole("zoo/cartpole-v0", 2)
    code = main(["export", "zoo/cartpole-v0", "--minari-root", str(tmp_path / "m")])
    out, _ = capsys.readouterr()
    assert code == 0 and out.endswith(f"to {tmp_path / 'm' / 'zoo' / 'cartpole-v0'}\n")
    assert _load(tmp_path / "m", "zoo/cartpole-v0").total_episodes == 2
    argv = ["export", "zoo/cartpole-v0", "--data-format", "parquet", "--into", "zoo/pq-v0"]
    assert main([*argv, "--minari-root", str(tmp_path / "m")]) == 0
    capsys.readouterr()
    assert _load(tmp_path / "m", "zoo/pq-v0").storage.metadata["data_format"] == "parquet"
    code = main(["export", "zoo/cartpole-v0", "--minari-root", str(tmp_path / "m")])
    _, err = capsys.readouterr()
    assert code == 1 and "already exists" in err and err.count("\n") == 1


def test_minari_cli_lists_and_shows_an_export(tmp_path: Path) -> None:
    from minari.cli import app
    from typer.testing import CliRunner

    record_cartpole("zoo/cartpole-v0", 3)
    to_minari("zoo/cartpole-v0")
    to_minari("zoo/cartpole-v0", data_format="parquet", new_dataset_id="zoo/parquet-v0")
    runner = CliRunner()
    listed = runner.invoke(app, ["list", "local", "--all"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0, listed.output
    assert "zoo/cartpole-v0" in listed.output and "zoo/parquet-v0" in listed.output
    shown = runner.invoke(app, ["show", "zoo/parquet-v0"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "CartPole-v1" in shown.output and "supported" in shown.output


def test_an_exported_split_carries_none_of_the_held_out_episodes(tmp_path: Path) -> None:
    """Issue 16, item 13: an export scans to exactly the dataset's episodes."""
    import h5py

    from curation.ops import save_dataset, split_dataset

    record_cartpole("cart/src-v0", episodes=20)
    train, _ = split_dataset(load_dataset("cart/src-v0"), [0.6, 0.4], seed=0)
    saved = save_dataset(train, "cart/train-v0")
    want = sorted(ep.seed for ep in saved.iterate_episodes())
    assert len(want) == 12
    for i, source in enumerate((saved, train)):
        folder = to_minari(source, tmp_path / "minari", new_dataset_id=f"cart/train{i}-v0")
        found = []
        for file in sorted(folder.rglob("*.hdf5")):
            with h5py.File(file, "r") as f:
                found += [int(f[name].attrs["seed"]) for name in f if name.startswith("episode_")]
        assert sorted(found) == want


def test_overwriting_a_symlinked_export_refuses_before_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16 item 4: no remover follows a link (rmtree refused it after the export was built)."""
    record("zoo/box-v0", ZOO["box"], episodes=2)
    minari_root = tmp_path / "minari"
    elsewhere = tmp_path / "elsewhere"
    to_minari("zoo/box-v0", minari_root=elsewhere)
    (minari_root / "zoo").mkdir(parents=True)
    (minari_root / "zoo" / "box-v0").symlink_to(elsewhere / "zoo" / "box-v0")
    before = sorted(p.name for p in (elsewhere / "zoo" / "box-v0").rglob("*"))
    with pytest.raises(UsageError, match="is a symbolic link"):
        to_minari("zoo/box-v0", minari_root=minari_root, overwrite=True)
    assert sorted(p.name for p in (elsewhere / "zoo" / "box-v0").rglob("*")) == before
    assert sorted(p.name for p in minari_root.iterdir()) == ["zoo"]
