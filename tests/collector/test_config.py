"""The typed collect config: one default per key, one check, the CLI's did-you-mean in the API."""

from __future__ import annotations

import dataclasses
import pickle
import re
from typing import Any

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from collector.collect import collect
from collector.config import (
    CheckpointConfig,
    CollectConfig,
    RunnerConfig,
    StorageConfig,
    register_schema,
    schema,
)
from collector.errors import UsageError


def composed(*overrides: str) -> dict[str, Any]:
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose("collect", overrides=list(overrides))
    out = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(out, dict)
    return out


def test_the_yaml_and_the_dataclasses_hold_the_same_defaults() -> None:
    assert CollectConfig.from_dict(composed()) == CollectConfig()
    assert CollectConfig.from_dict({}) == CollectConfig()  # a dict leaving keys out: the same
    ray = CollectConfig.from_dict(composed("runner=ray")).runner
    assert ray == RunnerConfig(name="ray")
    assert (ray.max_restarts, ray.episode_retries) == (3, 2)  # conf/runner/ray.yaml's values


def test_the_schema_knows_every_key_the_yaml_has() -> None:
    for config in (composed(), composed("runner=ray")):
        merged = OmegaConf.merge(schema(), config)  # raises on a key the schema lacks
        assert CollectConfig.from_dict(merged) == CollectConfig.from_dict(config)
    register_schema()
    from hydra.core.config_store import ConfigStore

    assert "collect_schema.yaml" in ConfigStore.instance().list("/")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"epsiodes": 2}, "unknown config key 'epsiodes'; did you mean 'episodes'?"),
        (
            {"checkpoint": {"every_second": 3}},
            "unknown config key 'checkpoint.every_second'; did you mean "
            "'checkpoint.every_seconds'?",
        ),
        ({"runner": {"worker": 3}}, "unknown config key 'runner.worker'; did you mean"),
    ],
)
def test_collect_refuses_an_unknown_key_as_the_cli_does(
    change: dict[str, Any], message: str, datasets_root: Any
) -> None:
    with pytest.raises(UsageError, match=re.escape(message)) as info:
        collect({"env": "CartPole-v1", "episodes": 2, **change})
    assert str(info.value).endswith("(collect --help lists the keys)")
    assert not datasets_root.exists() or not list(datasets_root.rglob("*.json"))


def test_the_typed_config_pickles_for_ray_actors() -> None:
    config = CollectConfig.from_dict(
        {"runner": {"name": "ray", "init": {"num_cpus": 2}}, "env_kwargs": {"x": 1}}
    )
    assert pickle.loads(pickle.dumps(config)) == config
    with pytest.raises(AttributeError):
        config.episodes = 3  # type: ignore[misc]


def test_the_api_and_the_cli_know_the_same_keys() -> None:
    """Every key of the YAML (either runner) is a schema field, and every field a YAML key."""
    sections = {"checkpoint": CheckpointConfig, "storage": StorageConfig, "runner": RunnerConfig}
    fields = {f.name for f in dataclasses.fields(CollectConfig)}
    local, ray = composed(), composed("runner=ray")
    assert set(local) == fields
    for name, kind in sections.items():
        yaml_keys = set(local[name]) | set(ray[name])
        assert yaml_keys == {f.name for f in dataclasses.fields(kind)}, name
