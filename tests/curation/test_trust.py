"""Issue 16 item 2: nothing read from a dataset imports or calls code the user did not name.

``recover_environment`` makes only envs whose stored spec is what Gymnasium's registry says;
any other entry point (or a wrapper) needs ``trust_remote_code=True``.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
from helpers import collect_cartpole

from collector import storage
from collector.errors import UsageError
from curation import load_dataset, pull_dataset, push_dataset

OPT_IN = "pass trust_remote_code=True"


def set_env_spec(dataset_id: str, change: Any) -> None:
    """Rewrite a dataset's stored env spec through the writer (a commit like any other)."""
    with storage.DatasetWriter(dataset_id) as writer:
        assert writer.meta is not None
        spec = dict(writer.meta["env_spec"])
        change(spec)
        writer.commit(env_spec=spec)


def os_system(marker: Path) -> Any:
    def change(spec: dict[str, Any]) -> None:
        spec["entry_point"] = "os:system"
        spec["kwargs"] = {"command": f"touch {shlex.quote(str(marker))}"}

    return change


def test_a_pulled_os_system_entry_point_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    collect_cartpole("evil/cart-v0", episodes=1)
    set_env_spec("evil/cart-v0", os_system(marker))
    (tmp_path / "remote").mkdir()
    remote = f"file://{tmp_path / 'remote'}"
    push_dataset("evil/cart-v0", remote)
    pull_dataset("evil/cart-v0", remote, overwrite=True)
    ds = load_dataset("evil/cart-v0")
    for eval_env in (False, True):
        with pytest.raises(UsageError) as info:
            ds.recover_environment(eval_env=eval_env)
        text = str(info.value)
        assert "\n" not in text
        assert "entry_point 'os:system'" in text
        assert "'CartPole-v1'" in text and OPT_IN in text
    assert not marker.exists()


@pytest.mark.parametrize(
    ("change", "named"),
    [
        # an id nobody registered, with gymnasium's own entry point
        (lambda s: s.update(id="Nowhere-v0"), "env 'Nowhere-v0' is not registered"),
        # a "module:" id would import the module in gym.spec()
        (lambda s: s.update(id="os:Evil-v0"), "env 'os:Evil-v0' is not registered"),
        # a wrapper the dataset asks for
        (
            lambda s: s.update(
                additional_wrappers=[
                    {"name": "W", "entry_point": "os:system", "kwargs": {"command": "true"}}
                ]
            ),
            "wrapper entry_point 'os:system'",
        ),
        (lambda s: s.update(vector_entry_point="os:system"), "vector_entry_point 'os:system'"),
    ],
)
def test_specs_outside_the_registry_are_refused(change: Any, named: str) -> None:
    collect_cartpole("odd/cart-v0", episodes=1)
    set_env_spec("odd/cart-v0", change)
    with pytest.raises(UsageError, match=re.escape(named)) as info:
        load_dataset("odd/cart-v0").recover_environment()
    assert OPT_IN in str(info.value) and "\n" not in str(info.value)


MY_ENV = """
import gymnasium as gym
import numpy as np


class MyEnv(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), 1.0, True, False, {}
"""


def test_a_custom_entry_point_needs_the_opt_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "harvest_trust_env.py").write_text(MY_ENV)
    monkeypatch.syspath_prepend(str(code))
    collect_cartpole("mine/cart-v0", episodes=1)

    def custom(spec: dict[str, Any]) -> None:
        spec.update(id="harvest-trust/Mine-v0", entry_point="harvest_trust_env:MyEnv")

    set_env_spec("mine/cart-v0", custom)
    ds = load_dataset("mine/cart-v0")
    with pytest.raises(UsageError, match=re.escape("entry_point 'harvest_trust_env:MyEnv'")):
        ds.recover_environment()
    assert "harvest_trust_env" not in sys.modules
    env = ds.recover_environment(trust_remote_code=True)
    try:
        obs, _ = env.reset(seed=0)
        assert obs.shape == (2,)
    finally:
        env.close()


def test_a_registered_custom_env_needs_no_opt_in(tmp_path: Path) -> None:
    # the user registered it (imported their package): its stored spec matches the registry
    gym.register("harvest-trust/Slow-v0", entry_point="helpers:SlowEnv")
    try:
        collect_cartpole("slow/x-v0", episodes=1, env="harvest-trust/Slow-v0")
        env = load_dataset("slow/x-v0").recover_environment()
        env.close()
        # the same id pointing elsewhere is refused
        set_env_spec("slow/x-v0", os_system(tmp_path / "ran"))
        with pytest.raises(UsageError, match=re.escape("registered with entry_point")):
            load_dataset("slow/x-v0").recover_environment()
        assert not (tmp_path / "ran").exists()
    finally:
        del gym.registry["harvest-trust/Slow-v0"]


def test_a_minari_dataset_naming_os_system_is_refused(tmp_path: Path) -> None:
    import json
    import os
    import warnings

    minari = pytest.importorskip("minari")
    from curation import from_minari, open_minari

    marker = tmp_path / "ran"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        collector = minari.DataCollector(gym.make("CartPole-v1"), data_format="hdf5")
        collector.reset(seed=0)
        collector.step(0)
        collector.create_dataset("cart/evil-v0", eval_env="CartPole-v1")
    meta_path = Path(os.environ["MINARI_DATASETS_PATH"], "cart", "evil-v0", "data", "metadata.json")
    meta = json.loads(meta_path.read_text())
    for key in ("env_spec", "eval_env_spec"):
        spec = json.loads(meta[key])
        os_system(marker)(spec)
        meta[key] = json.dumps(spec)
    meta_path.write_text(json.dumps(meta))
    for ds in (open_minari("cart/evil-v0"), from_minari("cart/evil-v0", "cart/imported-v0")):
        for eval_env in (False, True):
            with pytest.raises(UsageError, match=re.escape("entry_point 'os:system'")):
                ds.recover_environment(eval_env=eval_env)
    assert not marker.exists()
