"""``create_dataset_from_buffers``: Minari's way to make a dataset from episodes in memory.

An episode buffer is Minari's layout (``minari.data_collector.EpisodeBuffer``, or a dict with
its field names): ``observations`` and ``infos`` with T+1 rows (the reset first), ``actions``,
``rewards``, ``terminations`` and ``truncations`` with T; nested like their spaces (a dict per
Dict space, a tuple per Tuple space), each leaf a list or an array of rows. ``seed``, ``options``
and ``id`` are optional.

Every value goes through the same ``EpisodeRecorder`` as ``DataCollector``'s steps, so it is
checked the same way (the space's shape, and a dtype that holds it exactly: never a silent
cast), and the same episodes get the same fingerprint whichever way they were recorded. The
episodes are committed once, as one new dataset.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.envs.registration import EnvSpec

from collector import storage
from collector.data_collector import DEFAULT_SPILL_BYTES, EpisodeSink
from collector.envs import make_env
from collector.errors import CollectionError, UsageError
from collector.recorder import EpisodeRecorder
from collector.spaces import batch_item

__all__ = ["BUFFER_FIELDS", "create_dataset_from_buffers"]

#: The fields of an episode buffer: Minari's ``EpisodeBuffer`` attributes (dict keys here).
BUFFER_FIELDS: Final = (
    "id",
    "seed",
    "options",
    "observations",
    "actions",
    "rewards",
    "terminations",
    "truncations",
    "infos",
)
_REQUIRED = ("observations", "actions", "rewards", "terminations", "truncations")
_WHO = "create_dataset_from_buffers"


def create_dataset_from_buffers(
    dataset_id: str,
    buffer: Iterable[Any],
    env: str | gym.Env | EnvSpec | None = None,
    eval_env: str | gym.Env | EnvSpec | None = None,
    algorithm_name: str | None = None,
    author: str | set[str] | None = None,
    author_email: str | set[str] | None = None,
    code_permalink: str | None = None,
    action_space: gym.Space | None = None,
    observation_space: gym.Space | None = None,
    ref_min_score: float | None = None,
    ref_max_score: float | None = None,
    expert_policy: Callable[[Any], Any] | None = None,
    num_episodes_average_score: int = 100,
    description: str | None = None,
    data_format: str | None = None,
    requirements: list[str] | None = None,
    *,
    jpeg_encoding: bool | None = None,
    compression: str = "lzf",
    root: str | os.PathLike[str] | None = None,
) -> Any:
    """Create a dataset from a list of episode buffers (Minari 0.5's arguments, in its order).

    Episodes get ids 0..N-1 in list order. Infos are recorded when any buffer has them.

    Args:
        dataset_id: ``[namespace/...]name-vN``.
        buffer: episode buffers: ``minari.data_collector.EpisodeBuffer`` objects or dicts with
            their fields (``BUFFER_FIELDS``); a buffer's ``id``, if set, must be its position.
        env: the env id, ``EnvSpec`` or env the data comes from (its spec is stored and its
            spaces are the default); None needs both spaces.
        eval_env: the env to evaluate with (``recover_environment(eval_env=True)``).
        algorithm_name: the algorithm that produced the data.
        author: author name(s).
        author_email: author email(s).
        code_permalink: a link to the code that produced the data.
        action_space: the stored action space (default: the env's).
        observation_space: the stored observation space (default: the env's).
        ref_min_score: the random policy's mean return.
        ref_max_score: an expert's mean return (or pass ``expert_policy``).
        expert_policy: ``f(obs) -> action`` whose mean return becomes ``ref_max_score``
            (and a random policy's ``ref_min_score``), as in ``DataCollector.create_dataset``.
        num_episodes_average_score: episodes those means are taken over.
        description: what the dataset is.
        data_format: None or ``"hdf5"`` (harvest's own shards); Minari's other formats are
            written by ``curation.to_minari``.
        requirements: pip requirements to recreate the env.
        jpeg_encoding: None or False: harvest stores frames losslessly, never as JPEG.
        compression: ``none | lzf | gzip[:level]`` for the shards.
        root: datasets root (default ``$HARVEST_DATASETS``).

    Returns:
        The opened ``curation.Dataset`` (its ``summary`` holds what was committed), or the
        ``DatasetSummary`` in a process that never imported ``curation``
        (``collector.handover``).

    Raises:
        UsageError: an argument harvest cannot honour, or a buffer that is not an episode.
        CollectionError: a value its space cannot hold exactly; nothing is written.
        DatasetExistsError: the id is taken.
    """
    storage.parse_dataset_id(dataset_id)
    if data_format not in (None, "hdf5"):
        raise UsageError(
            f"data_format={data_format!r}: harvest writes its own HDF5 shards; write Minari's "
            f"{data_format} layout from the dataset with curation.to_minari"
        )
    if jpeg_encoding:
        raise UsageError(
            "jpeg_encoding=True: harvest stores frames losslessly, never as JPEG; drop the "
            "argument (or pass False)"
        )
    spec, obs_space, act_space = _env_and_spaces(env, observation_space, action_space)
    if expert_policy is not None and env is None and eval_env is None:
        raise UsageError("expert_policy needs env or eval_env to be evaluated in")
    episodes = _episodes(buffer)
    record_infos = any(ep["infos"] is not None for ep in episodes)
    sink = _BufferSink(obs_space, act_space, spec, record_infos, compression, root)
    try:
        for i, ep in enumerate(episodes):
            sink.record(i, ep)
        return sink.create_dataset(
            dataset_id,
            eval_env=eval_env,
            algorithm_name=algorithm_name,
            author=author,
            author_email=author_email,
            code_permalink=code_permalink,
            ref_min_score=ref_min_score,
            ref_max_score=ref_max_score,
            expert_policy=expert_policy,
            num_episodes_average_score=num_episodes_average_score,
            description=description,
            requirements=requirements,
        )
    finally:
        sink.close()


def _env_and_spaces(
    env: Any, observation_space: gym.Space | None, action_space: gym.Space | None
) -> tuple[EnvSpec | None, gym.Space, gym.Space]:
    """The env's spec and the stored spaces (the env is made only to learn missing spaces)."""
    if env is None:
        if observation_space is None or action_space is None:
            raise UsageError(f"{_WHO}: pass env, or both observation_space and action_space")
        return None, observation_space, action_space
    if isinstance(env, gym.Env):
        spec, made, own = env.spec, env, False
    elif isinstance(env, str):
        made, own = make_env(env), True
        spec = made.spec
    elif isinstance(env, EnvSpec):
        spec, made, own = env, None, True
        if observation_space is None or action_space is None:
            try:
                made = gym.make(env)
            except (gym.error.Error, ImportError, TypeError) as e:
                raise UsageError(f"{_WHO}: cannot make env {env.id!r}: {e}") from e
    else:
        raise UsageError(
            f"{_WHO}: env is {type(env).__name__}; pass an env id, a gymnasium EnvSpec or an env"
        )
    try:
        if made is not None:
            observation_space = observation_space or made.observation_space
            action_space = action_space or made.action_space
    finally:
        if own and made is not None:
            made.close()
    assert observation_space is not None and action_space is not None
    return spec, observation_space, action_space


def _episodes(buffer: Iterable[Any]) -> list[dict[str, Any]]:
    """Each buffer's fields as a dict, with ``seed``, ``options`` and ``id`` checked."""
    if isinstance(buffer, str | bytes | Mapping) or not isinstance(buffer, Iterable):
        raise UsageError(
            f"{_WHO}: buffer is {type(buffer).__name__}; pass a list of episode buffers"
        )
    return [_fields(i, b) for i, b in enumerate(buffer)]


def _fields(index: int, buf: Any) -> dict[str, Any]:
    where = f"{_WHO}: buffer {index}"
    if isinstance(buf, Mapping):
        unknown = sorted(set(buf) - set(BUFFER_FIELDS), key=str)
        if unknown:
            raise UsageError(f"{where} has unknown key(s) {unknown}; known: {list(BUFFER_FIELDS)}")
        ep = {k: buf.get(k) for k in BUFFER_FIELDS}
    elif all(hasattr(buf, k) for k in _REQUIRED):
        ep = {k: getattr(buf, k, None) for k in BUFFER_FIELDS}
    else:
        raise UsageError(
            f"{where} is {type(buf).__name__}; pass minari EpisodeBuffer objects or dicts with "
            f"keys {list(BUFFER_FIELDS)}"
        )
    missing = [k for k in _REQUIRED if ep[k] is None]
    if missing:
        raise UsageError(f"{where} has no {', '.join(missing)}")
    if ep["id"] is not None and ep["id"] != index:
        raise UsageError(
            f"{where} has id {ep['id']!r}; episodes are numbered 0..N-1 in list order, so drop "
            "the ids or order the buffers by id"
        )
    seed = ep["seed"]
    if seed is not None and (
        isinstance(seed, bool | np.bool_)
        or not isinstance(seed, int | np.integer)
        or not 0 <= int(seed) < 2**64
    ):
        raise UsageError(f"{where} has seed {seed!r}; a seed is None or an int in [0, 2**64)")
    if seed is not None:
        ep["seed"] = int(seed)
    if ep["options"] is not None:
        try:
            if not isinstance(ep["options"], Mapping):
                raise TypeError(type(ep["options"]).__name__)
            json.dumps(ep["options"], default=storage.json_default)
        except (TypeError, ValueError) as e:
            raise UsageError(f"{where} has options that are not a JSON dict ({e})") from None
    return ep


def _check_rows(space: spaces.Space, value: Any, rows: int, what: str) -> None:
    """``value`` is nested like ``space`` with ``rows`` rows in every leaf."""
    if isinstance(space, spaces.Dict):
        if not isinstance(value, Mapping):
            raise UsageError(f"{what} is {type(value).__name__}, not a dict of its Dict space")
        for key, sub in space.spaces.items():
            if key not in value:
                raise UsageError(f"{what} has no key {key!r} of its Dict space")
            _check_rows(sub, value[key], rows, f"{what}[{key!r}]")
        return
    if isinstance(space, spaces.Tuple):
        if not isinstance(value, tuple | list) or len(value) != len(space.spaces):
            raise UsageError(f"{what} is not a tuple of its Tuple space's {len(space)} parts")
        for i, sub in enumerate(space.spaces):
            _check_rows(sub, value[i], rows, f"{what}[{i}]")
        return
    _check_length(value, rows, what)


def _check_length(value: Any, rows: int, what: str) -> None:
    try:
        n = len(value)
    except TypeError:
        n = None
    if n != rows:
        has = f"has {n} rows" if n is not None else f"is {type(value).__name__}, not rows"
        raise UsageError(
            f"{what} {has} where the episode needs {rows} (observations and infos: T+1 rows, "
            "the reset first; actions, rewards, terminations and truncations: T)"
        )


def _check_info_rows(infos: Any, rows: int, what: str) -> None:
    if not isinstance(infos, Mapping):
        raise UsageError(f"{what} is {type(infos).__name__}, not a dict")
    for key, value in infos.items():
        if isinstance(value, Mapping):
            _check_info_rows(value, rows, f"{what}[{key!r}]")
        else:
            _check_length(value, rows, f"{what}[{key!r}]")


def _info_row(infos: Mapping[str, Any] | None, t: int) -> dict[str, Any] | None:
    if infos is None:
        return None
    return {k: _info_row(v, t) if isinstance(v, Mapping) else v[t] for k, v in infos.items()}


class _BufferSink(EpisodeSink):
    """A collector fed from buffers instead of an env: records, spills and commits them."""

    created_by = _WHO

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        env_spec: EnvSpec | None,
        record_infos: bool,
        compression: str,
        root: str | os.PathLike[str] | None,
    ) -> None:
        self._spec = env_spec
        self._open_sink(
            observation_space, action_space, record_infos, compression, DEFAULT_SPILL_BYTES, root
        )

    def _make_recorder(self) -> EpisodeRecorder:
        return EpisodeRecorder(self._obs_space, self._act_space, self.record_infos)

    def _end_open(self) -> None:
        self._recorder.discard_episode()  # none is open between buffers

    def _env_spec(self) -> EnvSpec | None:
        return self._spec

    def close(self) -> None:
        """Drop anything recorded but not committed."""
        self._close_spill_dir()

    def record(self, index: int, ep: dict[str, Any]) -> None:
        """Record buffer ``index`` as episode ``index`` through the recorder's checks."""
        where = f"{_WHO}: buffer {index}"
        steps = len(ep["rewards"]) if hasattr(ep["rewards"], "__len__") else None
        if not steps:
            raise UsageError(f"{where} has no steps (rewards is empty or not a list); drop it")
        obs, act, infos = ep["observations"], ep["actions"], ep["infos"]
        _check_rows(self._obs_space, obs, steps + 1, f"{where} observations")
        _check_rows(self._act_space, act, steps, f"{where} actions")
        for key in ("terminations", "truncations"):
            _check_length(ep[key], steps, f"{where} {key}")
        if infos is not None:
            _check_info_rows(infos, steps + 1, f"{where} infos")
        rewards, terms, truncs = ep["rewards"], ep["terminations"], ep["truncations"]
        obs_space, act_space, rec = self._obs_space, self._act_space, self._recorder
        try:
            first = batch_item(obs_space, obs, 0)
            rec.begin_episode(index, ep["seed"], ep["options"], first, _info_row(infos, 0))
            for t in range(steps):
                rec.add_step(
                    batch_item(act_space, act, t),
                    batch_item(obs_space, obs, t + 1),
                    rewards[t],
                    terms[t],
                    truncs[t],
                    _info_row(infos, t + 1),
                )
        except CollectionError as e:
            rec.discard_episode()
            raise CollectionError(f"{where}: {e}; nothing was written") from None
        rec.end_episode(force_truncate=False)
        if rec.nbytes >= self.spill_bytes:
            self._spill()
