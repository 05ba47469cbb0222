"""The typed collect config: one default per key, one check, the CLI's did-you-mean in the API."""

from __future__ import annotations

import dataclasses
import pickle
import re
from typing import Any

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from collector.cli import check_overrides
from collector.collect import collect
from collector.config import (
    RUNNER_CONFIGS,
    CheckpointConfig,
    CollectConfig,
    LocalRunnerConfig,
    RayRunnerConfig,
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
    assert CollectConfig().runner == LocalRunnerConfig()
    ray = CollectConfig.from_dict(composed("runner=ray")).runner
    assert ray == RayRunnerConfig()
    assert (ray.max_restarts, ray.episode_retries) == (3, 2)  # conf/runner/ray.yaml's values


def test_the_yaml_extends_the_registered_schema() -> None:
    """Hydra composes ``collect.yaml`` onto the dataclasses: types and keys are checked."""
    for runner in RUNNER_CONFIGS:
        config = composed(f"runner={runner}")
        merged = OmegaConf.merge(schema(runner), config)  # raises on a key the schema lacks
        assert CollectConfig.from_dict(merged) == CollectConfig.from_dict(config)
    from hydra.core.config_store import ConfigStore

    register_schema()  # again: idempotent
    assert "collect_schema.yaml" in ConfigStore.instance().list("/")
    assert {"local_schema.yaml", "ray_schema.yaml"} <= set(ConfigStore.instance().list("runner"))
    with pytest.raises(Exception, match="episodes"):
        composed("episodes=abc")  # the schema's type, not a string passed on
    assert composed("checkpoint.every_seconds=5")["checkpoint"]["every_seconds"] == 5.0


def test_a_local_run_stores_no_ray_keys() -> None:
    assert set(composed()["runner"]) == {"name", "step_timeout"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["episodes=abc"], "episodes='abc' must be an integer"),
        (["seed=1.5"], "seed=1.5 must be an integer or null"),
        (["record_infos=maybe"], "record_infos='maybe' must be true or false"),
        (["checkpoint.every_mb=lots"], "checkpoint.every_mb='lots' must be a number or null"),
        (["runner=ray", "runner.workers=many"], "runner.workers='many' must be an integer"),
        (
            ["runner.workers=4"],
            "runner.workers is a key of runner=ray, not of runner=local; add runner=ray",
        ),
        (
            ["runner=ray", "runner.step_timeout=3"],
            "runner.step_timeout is a key of runner=local, not of runner=ray; add runner=local "
            "or use runner.batch_timeout",
        ),
    ],
)
def test_the_cli_refuses_a_value_of_the_wrong_type_in_one_line(
    argv: list[str], message: str
) -> None:
    with pytest.raises(UsageError, match=re.escape(message)) as info:
        check_overrides(argv)
    assert "\n" not in str(info.value)


def test_the_cli_leaves_good_values_and_unknown_runners_to_hydra() -> None:
    good = ["runner=ray", "runner.workers=4", "episodes=7", "seed=null", "record_infos=true"]
    assert check_overrides(good) == good
    experiment = ["+experiment=cartpole_heuristic", "runner.workers=4"]  # it may pick ray
    assert check_overrides(experiment) == experiment


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
    """Every key of the YAML is a schema field, and every field a YAML key, for each runner."""
    sections = {"checkpoint": CheckpointConfig, "storage": StorageConfig}
    fields = {f.name for f in dataclasses.fields(CollectConfig)}
    local = composed()
    assert set(local) == fields
    for name, kind in sections.items():
        assert set(local[name]) == {f.name for f in dataclasses.fields(kind)}, name
    for runner, kind in RUNNER_CONFIGS.items():
        keys = set(composed(f"runner={runner}")["runner"])
        assert keys == {f.name for f in dataclasses.fields(kind)}, runner
