"""``DataCollector``: a Gymnasium wrapper that records everything the env does (Minari's API).

``VectorDataCollector`` does the same for a vector env (``gym.make_vec``), which Minari cannot.

Differences from Minari's, all on purpose: episodes are recorded into columnar numpy buffers
and spilled to hidden temp shards under ``<root>/.tmp/`` (so a long loop does not grow memory,
``create_dataset`` is a rename, and a crash leaves nothing the next collector does not clean);
per-episode seeds and options are kept; infos whose keys change do not crash recording.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import re
import secrets
import shutil
import stat
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv

from collector import storage
from collector.envs import env_spec_to_json
from collector.errors import CollectionError, DatasetExistsError, UsageError
from collector.handover import open_committed
from collector.recorder import EpisodeRecorder
from collector.spaces import check_supported, space_to_json
from collector.vector_recorder import VectorRecorder

__all__ = [
    "DataCollector",
    "DatasetSummary",
    "EpisodeSink",
    "StepDataCallback",
    "VectorDataCollector",
]

DEFAULT_SPILL_BYTES = 32 * 1024 * 1024
_OWNER = ".owner"


class StepDataCallback:
    """Minari's step-data hook: return the dict recorded for one step (override to edit)."""

    def __call__(
        self,
        env: gym.Env,
        obs: Any,
        info: dict[str, Any],
        action: Any = None,
        rew: Any = None,
        terminated: Any = None,
        truncated: Any = None,
    ) -> dict[str, Any]:
        """Return ``{observation, action, reward, terminated, truncated, info}``."""
        return {
            "observation": obs,
            "action": action,
            "reward": rew,
            "terminated": terminated,
            "truncated": truncated,
            "info": info,
        }


@dataclass(frozen=True)
class DatasetSummary:
    """What ``create_dataset`` and ``add_to_dataset`` committed."""

    dataset_id: str
    path: Path
    total_episodes: int
    total_steps: int
    fingerprint: str

    @property
    def summary(self) -> DatasetSummary:
        """Itself: ``create_dataset(...).summary`` works whether it returned this or a dataset."""
        return self


def _instance(cb: Any) -> Any:
    return cb() if isinstance(cb, type) else cb


#: A spill folder's name: ``<pid>-<12 hex>``. Anything else in ``<root>/.tmp`` (a pull's
#: staging folder, another tool's files) is not a collector's to clean (issue 16 item 17).
_SPILL_NAME = re.compile(r"^(\d+)-[0-9a-f]{12}$", re.ASCII)

#: ... and of one whose collector died between creating and naming it.
_HALF_MADE = re.compile(r"^\.(\d+)-[0-9a-f]{12}\.new$", re.ASCII)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, another user's
        return True
    return True


def cleanup_spills(root: str | os.PathLike[str] | None = None) -> int:
    """Remove spill folders whose collector process is gone; returns how many.

    Only real folders named like a spill folder (never a symlink) whose owner lock nobody
    holds: a live collector keeps its ``.owner`` file flocked for its whole life, and a
    folder gets its final name only once that lock is held (``_ensure_spill_dir``).
    """
    base = storage.datasets_root(root) / storage.SPILL_DIR
    removed = 0
    if not base.is_dir():
        return 0
    for d in base.iterdir():
        half = _HALF_MADE.match(d.name)
        if half is not None and not d.is_symlink() and not _pid_alive(int(half.group(1))):
            shutil.rmtree(d, ignore_errors=True)  # died between mkdir and rename
            removed += 1
            continue
        if _SPILL_NAME.match(d.name) is None:
            continue
        try:
            if not stat.S_ISDIR(os.lstat(d).st_mode):
                continue
            fd = os.open(d / _OWNER, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:  # a spill folder is named only with its owner file in it
            shutil.rmtree(d, ignore_errors=True)
            removed += 1
            continue
        except OSError:
            continue  # unreadable, or an owner that is a link: not provably ours
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue  # a live collector owns it
        try:  # removed while holding the owner lock
            shutil.rmtree(d, ignore_errors=True)
        finally:
            os.close(fd)
        removed += 1
    return removed


class EpisodeSink:
    """What every collector shares: spilling finished episodes and committing them as datasets.

    Subclasses (the two collectors, ``collector.buffers``) call ``_open_sink(...)`` from their
    constructor and provide ``_make_recorder``, ``_end_open`` (end the open episodes, marking
    them truncated) and ``_env_spec``.
    """

    #: ``provenance.created_by`` of the datasets it creates (default: the class name).
    created_by: str | None = None

    _obs_space: gym.Space
    _act_space: gym.Space
    record_infos: bool
    compression: str
    spill_bytes: int
    _root: Path

    def _make_recorder(self) -> Any:
        raise NotImplementedError

    def _end_open(self) -> None:
        raise NotImplementedError

    def _env_spec(self) -> Any:
        raise NotImplementedError

    def _open_sink(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        record_infos: bool,
        compression: str,
        spill_bytes: int,
        root: str | os.PathLike[str] | None,
    ) -> None:
        """Check the stored spaces and compression, then start with empty storage."""
        check_supported(observation_space, "observation")
        check_supported(action_space, "action")
        storage.parse_compression(compression)
        self._obs_space, self._act_space = observation_space, action_space
        self.record_infos = record_infos
        self.compression = compression
        self.spill_bytes = spill_bytes
        self._root = storage.datasets_root(root)
        cleanup_spills(self._root)
        self._spill_dir: Path | None = None
        self._owner_fd: int | None = None
        self._new_storage()

    # -- storage ---------------------------------------------------------------------------

    def _new_storage(self) -> None:
        self._recorder = self._make_recorder()
        self._spills: list[Path] = []
        #: per spill: the table and info schema it was written from (adopted unread)
        self._spill_tables: dict[Path, tuple[dict[str, Any], Any]] = {}
        #: the last spill's whole batch when small: a merge soon after reads nothing back
        self._spill_batch: dict[Path, storage.EpisodeBatch] = {}
        self._unspilled: storage.EpisodeBatch | None = None
        self._next_id = 0

    def _ensure_spill_dir(self) -> Path:
        if self._spill_dir is None:
            name = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
            d = self._root / storage.SPILL_DIR / name
            # locked under a name cleanup_spills ignores, then renamed: a folder with a spill
            # name always has a held owner lock while its collector lives
            new = d.with_name(f".{name}.new")
            new.mkdir(parents=True)
            self._owner_fd = os.open(new / _OWNER, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self._owner_fd, fcntl.LOCK_EX)
            os.rename(new, d)
            self._spill_dir = d
        return self._spill_dir

    def _spill(self) -> None:
        batch = self._recorder.take()
        if self._unspilled is not None:
            batch = (
                self._unspilled
                if batch is None
                else storage.concat_batches([self._unspilled, batch])
            )
        if batch is None:
            return
        storage.fill_digests(batch)
        try:
            with storage.storage_errors(self._root / storage.SPILL_DIR, "create a spill folder in"):
                path = self._ensure_spill_dir() / storage.spill_name(len(self._spills))
            storage.write_shard_file(batch, path, self.compression)
        except BaseException:
            # kept in memory: the next spill or create_dataset (after space is freed) writes it
            batch.table.pop("digest")
            self._unspilled = batch
            raise
        self._unspilled = None
        self._spills.append(path)
        self._spill_tables[path] = (batch.table, batch.info_schema())
        small = batch.nbytes <= storage.KEEP_BATCH_BYTES
        self._spill_batch = {path: batch} if small else {}

    # -- datasets ------------------------------------------------------------------------

    def _flush(self) -> list[Path]:
        self._end_open()
        self._spill()
        return list(self._spills)

    def create_dataset(
        self,
        dataset_id: str,
        eval_env: str | gym.Env | gym.envs.registration.EnvSpec | None = None,
        algorithm_name: str | None = None,
        author: str | set[str] | None = None,
        author_email: str | set[str] | None = None,
        code_permalink: str | None = None,
        ref_min_score: float | None = None,
        ref_max_score: float | None = None,
        expert_policy: Callable[[Any], Any] | None = None,
        num_episodes_average_score: int = 100,
        description: str | None = None,
        requirements: list[str] | None = None,
    ) -> Any:
        """Commit everything recorded so far as a new dataset, then start afresh.

        Returns:
            The opened dataset, as Minari returns a ``MinariDataset``: a ``curation.Dataset``
            (its ``summary`` is the ``DatasetSummary``), or the ``DatasetSummary`` itself in a
            process that never imported ``curation`` (``collector.handover``).

        Raises:
            DatasetExistsError: the id is taken (use ``add_to_dataset`` to extend it).
            StorageError: the disk is full, read-only or not writable; no dataset folder is
                left and the recorded episodes are kept, so the same call can be repeated.
        """
        storage.parse_dataset_id(dataset_id)
        if expert_policy is not None and ref_max_score is not None:
            raise UsageError("pass expert_policy or ref_max_score, not both")
        fields = {
            "algorithm_name": algorithm_name,
            "author": author,
            "author_email": author_email,
            "code_permalink": code_permalink,
            "description": description,
            "requirements": requirements,
            "ref_min_score": ref_min_score,
            "ref_max_score": ref_max_score,
            "eval_env_spec": _eval_env_spec(eval_env),
        }
        if expert_policy is not None:
            fields.update(
                _reference_scores(
                    eval_env or self._env_spec(), expert_policy, num_episodes_average_score
                )
            )
        with storage.DatasetWriter(dataset_id, self._root) as writer:
            if writer.exists:
                raise DatasetExistsError(
                    f"dataset {dataset_id!r} already exists at {writer.path}; delete it, pick "
                    "another id, or use add_to_dataset",
                    dataset_id=dataset_id,
                )
            existed = writer.path.exists()
            try:
                spills = self._flush()
                writer.start(
                    storage.new_metadata(
                        self._obs_space,
                        self._act_space,
                        env_spec_to_json(self._env_spec()),
                        record_infos=self.record_infos,
                        provenance={"created_by": self.created_by or type(self).__name__},
                        **fields,
                    )
                )
                summary = self._adopt(writer, spills, id_offset=0)
            except BaseException:
                if not existed:  # no half-made dataset (e.g. a full disk at the commit)
                    shutil.rmtree(writer.path, ignore_errors=True)
                raise
        return open_committed(summary, self._root)  # opened once the lock is released

    def add_to_dataset(self, dataset: Any) -> DatasetSummary:
        """Append everything recorded so far to an existing dataset (an id or a dataset object).

        Returns what was committed, not an opened dataset (Minari returns None): a checkpoint
        loop calling it every few episodes pays for no read.
        """
        dataset_id = dataset if isinstance(dataset, str) else getattr(dataset, "id", None)
        if dataset_id is None:
            dataset_id = dataset.spec.dataset_id
        with storage.DatasetWriter(dataset_id, self._root) as writer:
            if not writer.exists:
                storage.read_metadata(writer.path, dataset_id)  # raises DatasetNotFoundError
            assert writer.meta is not None
            if bool(writer.meta.get("record_infos")) != self.record_infos:
                raise UsageError(
                    f"cannot add to {dataset_id!r}: it has record_infos="
                    f"{writer.meta.get('record_infos')} and this collector {self.record_infos}"
                )
            for key, space in (
                ("observation_space", self._obs_space),
                ("action_space", self._act_space),
            ):
                if writer.meta[key] != space_to_json(space):
                    raise UsageError(
                        f"cannot add to {dataset_id!r}: its {key} differs from this collector's"
                    )
            ids = writer.committed_ids()
            offset = int(ids.max()) + 1 if len(ids) else 0
            summary = self._adopt(writer, self._flush(), id_offset=offset)
            # the episodes are committed; now merge small shards by tiers, so that frequent
            # appends cost amortized O(what they add) and read like one run (issue 18 item 1)
            writer.compact(storage.APPEND_SHARD_BYTES, self.compression)
            return summary

    def _adopt(
        self, writer: storage.DatasetWriter, spills: list[Path], id_offset: int
    ) -> DatasetSummary:
        adopted: list[tuple[Path, Path]] = []
        try:
            for path in spills:
                entry = writer.adopt_shard(
                    path,
                    id_offset=id_offset,
                    compression=self.compression,
                    written=self._spill_tables.get(path),
                    batch=self._spill_batch.get(path),
                )
                adopted.append((writer.data_dir / entry["file"], path))
            meta = writer.commit()
        except BaseException:
            # the commit failed (a full disk): the episodes go back to the spill folder, so
            # the same call succeeds once the cause is fixed
            for installed, spill in adopted:
                with contextlib.suppress(OSError):
                    os.rename(installed, spill)
            raise
        self._close_spill_dir()
        self._new_storage()
        return DatasetSummary(
            writer.dataset_id,
            writer.path,
            meta["total_episodes"],
            meta["total_steps"],
            meta["fingerprint"],
        )

    def _close_spill_dir(self) -> None:
        if self._spill_dir is not None:
            shutil.rmtree(self._spill_dir, ignore_errors=True)
            self._spill_dir = None
        if self._owner_fd is not None:
            os.close(self._owner_fd)
            self._owner_fd = None

    def close(self) -> None:
        """Close the env and drop anything recorded but not committed."""
        self._close_spill_dir()
        super().close()  # type: ignore[misc]

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._close_spill_dir()


class DataCollector(EpisodeSink, gym.Wrapper):
    """Record an environment's episodes while your own loop drives it.

    Args:
        env: the environment to wrap.
        step_data_callback: Minari-style class or instance called each step; returns the
            dict to record (e.g. a subset of the observation).
        episode_metadata_callback: class or instance called with each finished episode's
            arrays (``rewards``, ``terminations``, ``truncations``); its JSON-able dict is
            stored per episode.
        record_infos: record ``info`` dicts (T+1 rows per episode, reset info first).
        observation_space: the stored observation space (default: the env's).
        action_space: the stored action space (default: the env's).
        compression: ``auto | none | lzf | gzip[:level] | zstd[:level]`` for the shards.
        spill_bytes: finished episodes are spilled to temp shards beyond this many bytes.
        root: datasets root (default ``$HARVEST_DATASETS``).
    """

    def __init__(
        self,
        env: gym.Env,
        step_data_callback: Any = None,
        episode_metadata_callback: Any = None,
        record_infos: bool = False,
        observation_space: gym.Space | None = None,
        action_space: gym.Space | None = None,
        data_format: str | None = None,
        *,
        compression: str = "auto",
        spill_bytes: int = DEFAULT_SPILL_BYTES,
        root: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(env)
        if data_format not in (None, "hdf5"):
            raise UsageError(f"data_format={data_format!r}: harvest writes its own HDF5 shards")
        self._step_cb = _instance(step_data_callback)
        if isinstance(self._step_cb, StepDataCallback) and type(self._step_cb) is StepDataCallback:
            self._step_cb = None  # the default changes nothing: keep the fast path
        self._meta_cb = _instance(episode_metadata_callback)
        self._last: tuple[Any, Any] | None = None
        self._open_sink(
            observation_space or env.observation_space,
            action_space or env.action_space,
            record_infos,
            compression,
            spill_bytes,
            root,
        )

    @property
    def observation_space(self) -> gym.Space:
        """The stored observation space."""
        return self._obs_space

    @property
    def action_space(self) -> gym.Space:
        """The stored action space."""
        return self._act_space

    # -- recording -------------------------------------------------------------------------

    def _make_recorder(self) -> EpisodeRecorder:
        return EpisodeRecorder(self._obs_space, self._act_space, self.record_infos)

    def _new_storage(self) -> None:
        super()._new_storage()
        self._last = None  # fresh storage needs a reset before step()

    def _end_open(self) -> None:
        self._end_episode(force_truncate=True)

    def _env_spec(self) -> Any:
        return self.env.spec

    def _end_episode(self, force_truncate: bool) -> None:
        rec = self._recorder
        if rec.in_episode:
            if rec.end_episode(force_truncate, self._meta_cb):
                self._next_id += 1  # a dropped empty episode gives its id back
            if rec.nbytes >= self.spill_bytes:
                self._spill()

    # -- the Env API -------------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset and start recording an episode.

        A reset in mid-episode marks its last step truncated; a reset with no steps is dropped.
        With ``seed=None`` a 64-bit seed is drawn and stored, so every episode can be replayed.
        """
        self._end_episode(force_truncate=True)
        if seed is None:
            seed = secrets.randbits(64)
        obs, info = self.env.reset(seed=seed, options=options)
        if self._step_cb is not None:
            data = self._step_cb(env=self.env, obs=obs, info=info)
            obs, info = data["observation"], data["info"]
        self._last = None  # a refused reset observation starts nothing (needs a new reset)
        self._recorder.begin_episode(self._next_id, seed, options, obs, info)
        self._last = (obs, info)
        return obs, info

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        """Step and record.

        Stepping past a terminal state starts a new episode from the last observation, with
        no seed (as Minari does).
        """
        rec = self._recorder
        if not rec.in_episode:
            if self._last is None:
                raise gym.error.ResetNeeded("call reset() before step() on a DataCollector")
            rec.begin_episode(self._next_id, None, None, *self._last)
        obs, rew, terminated, truncated, info = self.env.step(action)
        try:
            if self._step_cb is None:
                rec.add_step(action, obs, rew, terminated, truncated, info)
            else:
                d = self._step_cb(self.env, obs, info, action, rew, terminated, truncated)
                rec.add_step(
                    d["action"],
                    d["observation"],
                    d["reward"],
                    d["terminated"],
                    d["truncated"],
                    d["info"],
                )
                obs, info = d["observation"], d["info"]
        except CollectionError:
            # the recorder dropped the episode: stepping on must not start one from mid-way
            self._last = None
            raise
        if terminated or truncated:
            # kept only at episode ends: stepping on starts the next episode from here
            self._last = (obs, info)
            self._end_episode(force_truncate=False)
        return obs, rew, terminated, truncated, info


def _eval_env_spec(eval_env: Any) -> dict[str, Any] | None:
    if eval_env is None:
        return None
    if isinstance(eval_env, str):
        try:
            return env_spec_to_json(gym.spec(eval_env))
        except gym.error.Error as e:  # a user's typo: one line, not Gymnasium's traceback
            raise UsageError(f"eval_env={eval_env!r} is not a registered Gymnasium env: {e}") from e
    if isinstance(eval_env, gym.envs.registration.EnvSpec):
        return env_spec_to_json(eval_env)
    return env_spec_to_json(eval_env.spec)


def _reference_scores(
    env_like: Any, policy: Callable[[Any], Any], episodes: int
) -> dict[str, float]:
    """Mean return of ``policy`` (ref max) and of uniform random actions (ref min), seeded."""
    from collector.policies import RandomPolicy, as_policy
    from collector.scores import rollout_returns

    def make() -> gym.Env:
        if isinstance(env_like, str | gym.envs.registration.EnvSpec):
            return gym.make(env_like)
        return gym.make(env_like.spec)

    seeds = [123 + i for i in range(episodes)]
    probe = make()
    random_policy = RandomPolicy(probe.action_space)
    probe.close()
    return {
        "ref_max_score": float(rollout_returns(make, as_policy(policy), seeds, seeds).mean()),
        "ref_min_score": float(rollout_returns(make, random_policy, seeds, seeds).mean()),
    }


class VectorDataCollector(EpisodeSink, gym.vector.VectorWrapper):
    """Record a vector env's episodes while your own loop drives it.

    Minari has no vector support (its issue #174). Each sub-env's episodes are cut at their
    true boundaries, with no autoreset rows, and numbered in the order they finish. Works
    with ``NEXT_STEP`` autoreset (Gymnasium's default) and ``DISABLED`` (reset finished
    sub-envs yourself with ``options={"reset_mask": mask}``). Seeds are stored where a reset
    gave each sub-env one (a list, or an int on ``SyncVectorEnv``/``AsyncVectorEnv``, which
    seed sub-env ``i`` with ``seed + i``); autoreset episodes have none.

    Args:
        env: the vector env to wrap.
        record_infos: record infos (T+1 rows per episode, reset info first).
        compression: ``auto | none | lzf | gzip[:level] | zstd[:level]`` for the shards.
        spill_bytes: finished episodes are spilled to temp shards beyond this many bytes.
        root: datasets root (default ``$HARVEST_DATASETS``).
    """

    def __init__(
        self,
        env: gym.vector.VectorEnv,
        record_infos: bool = False,
        *,
        compression: str = "auto",
        spill_bytes: int = DEFAULT_SPILL_BYTES,
        root: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(env)
        mode = env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        if mode not in (AutoresetMode.NEXT_STEP, AutoresetMode.DISABLED):
            raise UsageError(
                f"autoreset mode {mode} is not supported: make the vector env with "
                "autoreset_mode=NEXT_STEP (the default) or DISABLED"
            )
        self._mode = mode
        self._restart = np.zeros(env.num_envs, bool)  # NEXT_STEP: resets on the next step
        self._open_sink(
            env.single_observation_space,
            env.single_action_space,
            record_infos,
            compression,
            spill_bytes,
            root,
        )

    def _make_recorder(self) -> VectorRecorder:
        return VectorRecorder(
            self._obs_space, self._act_space, self.num_envs, self.record_infos, ids_on_finish=True
        )

    def _end_open(self) -> None:
        self._recorder.end()

    def _env_spec(self) -> Any:
        """The sub-env's spec: the vector spec without make_vec's own arguments."""
        spec = self.env.spec
        if spec is None:
            envs = getattr(self.env.unwrapped, "envs", None)
            return envs[0].spec if envs else None
        vector_only = ("num_envs", "vectorization_mode", "vector_kwargs", "wrappers")
        return dataclasses.replace(
            spec, kwargs={k: v for k, v in spec.kwargs.items() if k not in vector_only}
        )

    def _seeds(self, seed: Any, envs: np.ndarray) -> list[int | None]:
        if isinstance(seed, int) and isinstance(self.env.unwrapped, SyncVectorEnv | AsyncVectorEnv):
            return [seed + int(i) for i in envs]
        if isinstance(seed, list | tuple):
            return [None if seed[i] is None else int(seed[i]) for i in envs]
        return [None] * len(envs)

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset (all sub-envs, or those in ``options["reset_mask"]``) and start episodes.

        A sub-env reset in mid-episode has its last step marked truncated.
        """
        mask = None if options is None else options.get("reset_mask")
        envs = np.arange(self.num_envs) if mask is None else np.flatnonzero(mask)
        self._recorder.end(envs)
        kept = {k: v for k, v in (options or {}).items() if k != "reset_mask"} or None
        obs, infos = self.env.reset(seed=seed, options=options)
        self._recorder.begin(
            envs,
            np.zeros(len(envs), np.int64),
            obs,
            infos,
            seeds=self._seeds(seed, envs),
            options=[kept] * len(envs),
        )
        self._restart[envs] = False
        return obs, infos

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """Step every sub-env and record the transitions (and NEXT_STEP autoresets)."""
        obs, rewards, terminated, truncated, infos = self.env.step(actions)
        rec = self._recorder
        if self._mode is AutoresetMode.NEXT_STEP:
            restart = self._restart
            starting = np.flatnonzero(restart)
            rec.record(
                obs,
                infos,
                actions,
                rewards,
                terminated,
                truncated,
                stepped=~restart,
                begin=starting,
                episode_ids=np.zeros(len(starting), np.int64),
            )
            self._restart = np.logical_or(terminated, truncated) & ~restart
        else:
            rec.record(obs, infos, actions, rewards, terminated, truncated)
        if rec.nbytes >= self.spill_bytes:
            self._spill()
        return obs, rewards, terminated, truncated, infos
