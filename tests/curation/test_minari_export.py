"""``to_minari``: what we write, the real ``minari`` package opens, equal episode by episode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from helpers import record_cartpole

from collector.data_collector import DataCollector
from collector.errors import DatasetExistsError, UsageError
from curation.dataset import load_dataset
from curation.minari import to_minari

minari = pytest.importorskip("minari")

ZOO: dict[str, spaces.Space] = {
    "box": spaces.Box(-1.0, 1.0, (3,), np.float32),
    "box2d": spaces.Box(-np.inf, np.inf, (2, 3), np.float64),
    "box_scalar": spaces.Box(0, 10, (), np.int32),
    "discrete_start": spaces.Discrete(4, start=-2),
    "multidiscrete": spaces.MultiDiscrete([3, 5]),
    "multibinary": spaces.MultiBinary(4),
    "text": spaces.Text(6, charset="abc"),
    "dict": spaces.Dict({"a": spaces.Discrete(3), "b": spaces.Box(0, 1, (2,), np.float32)}),
    "tuple": spaces.Tuple((spaces.Discrete(2), spaces.MultiBinary(3))),
    "deep": spaces.Dict(
        {"t": spaces.Tuple((spaces.Dict({"x": spaces.Box(0, 1, (1,)), "s": spaces.Text(4)}),))}
    ),
    "image": spaces.Box(0, 255, (32, 32, 3), np.uint8),
}


class ZooEnv(gym.Env):
    """Observations sampled from any space (seeded by reset), a few steps per episode."""

    def __init__(self, obs: spaces.Space, act: spaces.Space | None = None) -> None:
        self.observation_space = obs
        self.action_space = act or spaces.Discrete(2)
        self.t = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self.observation_space.seed(int(self.np_random.integers(2**31)))
        self.t = 0
        return self.observation_space.sample(), {"t": 0, "nested": {"v": 0.5}}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        self.t += 1
        info = {"t": self.t, "nested": {"v": 0.5 * self.t}}
        return self.observation_space.sample(), float(self.t), self.t >= 3, False, info


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


def assert_same(ours: Any, theirs: Any, where: str = "") -> None:
    if isinstance(ours, dict):
        assert set(ours) <= set(theirs), where
        for k in ours:
            assert_same(ours[k], theirs[k], f"{where}/{k}")
    elif isinstance(ours, tuple):
        assert len(ours) == len(theirs), where
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            assert_same(a, b, f"{where}/{i}")
    elif isinstance(ours, list):
        assert list(ours) == list(theirs), where
    else:
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs), err_msg=where)


@pytest.mark.parametrize("kind", sorted(ZOO))
def test_minari_opens_every_space_kind_equal_to_ours(kind: str, tmp_path: Path) -> None:
    dataset_id = record(f"zoo/{kind}-v0", ZOO[kind])
    to_minari(dataset_id, tmp_path)
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
    with pytest.raises(UsageError, match="only 'hdf5'"):
        to_minari("zoo/box-v0", data_format="arrow")


def test_curate_export(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from curation.cli import main

    record_cartpole("zoo/cartpole-v0", 2)
    code = main(["export", "zoo/cartpole-v0", "--minari-root", str(tmp_path / "m")])
    out, _ = capsys.readouterr()
    assert code == 0 and out.endswith(f"to {tmp_path / 'm' / 'zoo' / 'cartpole-v0'}\n")
    assert _load(tmp_path / "m", "zoo/cartpole-v0").total_episodes == 2
    code = main(["export", "zoo/cartpole-v0", "--minari-root", str(tmp_path / "m")])
    _, err = capsys.readouterr()
    assert code == 1 and "already exists" in err and err.count("\n") == 1
