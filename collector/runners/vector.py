"""Vector envs on the local runner: ``num_envs`` sub-envs stepped together.

``sync`` and ``async`` (``run_vector``) are in the layout-independent tier (DESIGN.md
section 5): the vector env runs with ``AutoresetMode.DISABLED``; whenever a sub-env
finishes, it takes the next episode id and is reset alone (``reset_mask``) with that
episode's own seed, and each sub-env has its own policy instance reset with the episode's
policy seed (or, for a policy with ``reset_row``/``act_rows``, one instance acting for the
whole batch in one call, each row with its own stream). So episode ``i`` is the same
whichever sub-env, vector width or runner produced it, and the fingerprint matches
``runner=local`` (a batched forward pass's float rounding aside: ``collector.policy_loaders``).

``vector_entry_point`` (``run_vector_entry_point``) is the layout-dependent tier: the env's
own numpy implementation (e.g. Gymnasium's ``CartPoleVectorEnv``) draws every sub-env's
resets from one shared RNG, so episodes have no seed of their own (stored as null) and
depend on ``num_envs``. To keep resume and extend deterministic anyway, the run is cut into
segments of ``segment_episodes(num_envs)`` episode ids: segment ``k`` starts with
``reset(seed=env_seed(entropy, k * size))`` and the policy reseeded likewise, ids are handed
out in the order episodes start (sub-env order within a step), and the segment ends when
every episode it started has finished (none is cut short, so short episodes are not
favoured). Which ids a run records never changes the env's stream, so a resumed or extended
run replays the segment and records exactly the episodes an uninterrupted run would have.
"""

from __future__ import annotations

import functools
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv
from gymnasium.vector.utils import concatenate, create_empty_array

from collector.committer import commit_finished_on_error, progress_bar, show_rate
from collector.errors import CollectionError, StorageError, UsageError
from collector.plan import EpisodePlan, IdQueue, segment_episodes
from collector.policies import batch_actor, has_rows
from collector.recorder import refusal
from collector.runners.watch import StepTimeout, StepWatch
from collector.seeding import env_seed, policy_seed
from collector.spaces import ValueMismatch, batch_item, make_checker, make_leaf_checker

if TYPE_CHECKING:
    from collector.committer import Committer
    from collector.policies import Policy
    from collector.recorder import EpisodeRecorder
    from collector.vector_recorder import VectorRecorder

__all__ = ["run_vector", "run_vector_entry_point", "segment_episodes", "split_infos"]


def split_infos(infos: Mapping[str, Any], i: int) -> dict[str, Any]:
    """Sub-env ``i``'s info dict from a vector env's batched infos (``_key`` masks)."""
    out: dict[str, Any] = {}
    for key, value in infos.items():
        if key.startswith("_"):
            continue
        mask = infos.get("_" + key)
        if mask is not None and not mask[i]:
            continue
        out[key] = split_infos(value, i) if isinstance(value, Mapping) else value[i]
    return out


#: The info key under which ``ExactValues`` passes a sub-env's own info dict through.
RAW_INFO = "harvest.raw_info"


class RawInfo:
    """A sub-env's info dict as it returned it: Gymnasium batches it as an opaque object."""

    __slots__ = ("info",)

    def __init__(self, info: Any) -> None:
        self.info = info

    def __reduce__(self) -> Any:  # AsyncVectorEnv pickles it
        return (RawInfo, (self.info,))


class ExactValues(gym.Wrapper):
    """Refuse a sub-env's observation or reward that its space cannot hold exactly.

    Checked inside the sub-env, because Gymnasium's vector envs cast every sub-env's value
    into one batch array (broadcasting a shape, wrapping a value) before the recorder sees
    it. Raises ``ValueMismatch`` with ``sub_env`` and ``step`` set. With ``raw_infos`` the
    info dict is passed whole under ``RAW_INFO`` (see ``sub_env_info``): Gymnasium would
    cast an info value into an array typed after another sub-env's.
    """

    def __init__(self, env: gym.Env, sub_env: int, raw_infos: bool = False) -> None:
        super().__init__(env)
        self._sub_env = sub_env
        self._raw_infos = raw_infos
        self._t = 0
        self._check_obs = make_checker(env.observation_space, "observation")
        self._check_rew = make_leaf_checker(np.dtype(np.float64), (), "reward")

    def _refuse(self, err: ValueMismatch, step: int | None) -> ValueMismatch:
        return ValueMismatch(err.detail, sub_env=self._sub_env, step=step)

    def reset(self, **kwargs: Any) -> Any:  # noqa: D102
        obs, info = self.env.reset(**kwargs)
        self._t = 0
        try:
            self._check_obs(obs)
        except ValueMismatch as e:
            raise self._refuse(e, None) from None
        return obs, {RAW_INFO: RawInfo(info)} if self._raw_infos else info

    def step(self, action: Any) -> Any:  # noqa: D102
        obs, reward, terminated, truncated, info = self.env.step(action)
        try:
            self._check_obs(obs)
            if reward.__class__ is not float:
                self._check_rew(reward)
        except ValueMismatch as e:
            raise self._refuse(e, self._t) from None
        self._t += 1
        if self._raw_infos:
            info = {RAW_INFO: RawInfo(info)}
        return obs, reward, terminated, truncated, info


def _exact_env(make_env: Callable[[], gym.Env], sub_env: int, raw_infos: bool) -> gym.Env:
    return ExactValues(make_env(), sub_env, raw_infos)


def sub_env_info(infos: Mapping[str, Any], i: int) -> dict[str, Any]:
    """Sub-env ``i``'s info: its own dict when ``ExactValues`` passed it, else split."""
    raw = infos.get(RAW_INFO)
    if raw is None:
        return split_infos(infos, i)
    item = raw[i]
    return dict(item.info) if isinstance(item, RawInfo) else {}


def run_vector(
    make_env: Callable[[], gym.Env],
    make_policy: Callable[[Any], Policy],
    recorders: list[EpisodeRecorder],
    committer: Committer | None,
    episode_ids: Iterable[int],
    entropy: int,
    mode: str,
    progress: bool | None = None,
    step_timeout: float | None = None,
) -> int:
    """Run ``episode_ids`` on ``len(recorders)`` sub-envs; returns steps recorded.

    A step of the vector env that takes longer than ``step_timeout`` seconds fails the run
    (after the finished episodes are committed). ``committer=None``: nothing is committed
    here; the caller takes the finished episodes from ``recorders`` (a Ray worker).
    """
    raw_infos = any(rec.record_infos for rec in recorders)
    vec = _vector_env(make_env, len(recorders), mode, raw_infos)
    run = _VectorRun(vec, make_policy, recorders, committer, episode_ids, entropy)
    bar = progress_bar(len(run.queue), progress)
    watch = None if step_timeout is None else run.watch(step_timeout)
    reword = functools.partial(run.reword, step_timeout=step_timeout)
    try:
        with commit_finished_on_error(committer, run.discard, reword):
            steps = run.loop(bar)
    finally:
        if watch is not None:
            watch.stop()
        bar.close()
        _close(vec, hung=watch is not None and watch.fired)
    if committer is not None:
        committer.flush()
    return steps


def _vector_env(make_env: Callable[[], gym.Env], n: int, mode: str, raw_infos: bool) -> Any:
    """A sync or async vector env of ``n`` sub-envs, each wrapped in ``ExactValues``."""
    makers = [functools.partial(_exact_env, make_env, i, raw_infos) for i in range(n)]
    if mode == "sync":
        return SyncVectorEnv(makers, autoreset_mode=AutoresetMode.DISABLED)
    if mode == "async":
        return AsyncVectorEnv(makers, autoreset_mode=AutoresetMode.DISABLED)
    raise UsageError(f"vectorization_mode={mode!r}: use sync or async here")


def _close(vec: Any, hung: bool) -> None:
    """Close ``vec``; ``hung`` (a step timed out): without waiting for its sub-envs."""
    if hung:
        # a hung sub-env of an async vector env would make close() wait for it forever
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "close while waiting for a pending call"
            vec.close(terminate=True)
    else:
        vec.close()


def _splitter(space: gym.Space, n: int) -> Callable[[Any], list[Any]]:
    """``f(batch) -> [row 0, ..., row n-1]``: ``batch_item`` for each sub-env, at once."""
    if isinstance(space, (gym.spaces.Dict, gym.spaces.Tuple)):
        return lambda batch: [batch_item(space, batch, i) for i in range(n)]
    return list  # a leaf's rows are its items, as batch_item indexes them


def _items(values: np.ndarray) -> Any:
    """``values`` (per sub-env) as Python floats or bools, which ``add_step`` takes fastest."""
    if values.dtype == np.float64 or values.dtype == np.bool_:
        return values.tolist()  # exact: a float64 is a Python float
    return values


class _VectorRun:
    """One ``run_vector`` call: which episode each sub-env runs, the step loop, its failure.

    ``current[i]`` is the episode sub-env ``i`` runs (None: idle, the queue is empty).
    """

    def __init__(
        self,
        vec: Any,
        make_policy: Callable[[Any], Policy],
        recorders: list[EpisodeRecorder],
        committer: Committer | None,
        episode_ids: Iterable[int],
        entropy: int,
    ) -> None:
        self.vec = vec
        self.n = n = len(recorders)
        self.single_obs, self.single_act = vec.single_observation_space, vec.single_action_space
        spaces_of_one = SimpleNamespace(
            observation_space=self.single_obs, action_space=self.single_act
        )
        first = make_policy(spaces_of_one)
        # a policy with per-row streams acts for all sub-envs in one call (one forward pass);
        # any other gets an instance per sub-env, each with its own stream
        self.rows: Any = first if has_rows(first) else None
        self.policies = [first]
        if self.rows is None:
            self.policies += [make_policy(spaces_of_one) for _ in range(n - 1)]
        self.recorders = recorders
        self.committer = committer
        self.queue = IdQueue(episode_ids)
        self.entropy = entropy
        self.current: list[int | None] = [None] * n

    def watch(self, step_timeout: float) -> StepWatch:
        """A started ``StepWatch`` that fails a step taking over ``step_timeout`` seconds."""
        recorders, committer = self.recorders, self.committer
        return StepWatch(
            step_timeout,
            lambda: (
                sum(r.num_finished for r in recorders) if committer is None else committer.episodes,
                [r.episode_steps for r in recorders],
            ),
            lambda: committer is not None and committer.busy,
        ).start()

    def assign(self, mask: np.ndarray) -> list[int | None]:
        """Give each masked sub-env its next episode (or none); return the reset seeds."""
        queue, current, entropy = self.queue, self.current, self.entropy
        seeds: list[int | None] = [None] * self.n
        for i in np.flatnonzero(mask).tolist():
            if queue:
                eid = queue.popleft()
                current[i] = eid
                seeds[i] = env_seed(entropy, eid)
                if self.rows is not None:
                    self.rows.reset_row(i, policy_seed(entropy, eid))
                else:
                    self.policies[i].reset(policy_seed(entropy, eid))
            else:
                current[i] = None
                seeds[i] = 0  # an idle sub-env: reset so it can be stepped; data discarded
        return seeds

    def begin(
        self,
        mask: np.ndarray,
        seeds: list[int | None],
        obs: Any,
        infos: Mapping[str, Any] | None,
    ) -> None:
        """Open the episodes the masked sub-envs were just reset into (``infos``: if kept)."""
        current = self.current
        for i in np.flatnonzero(mask).tolist():
            if current[i] is not None:
                o = batch_item(self.single_obs, obs, i)
                info = sub_env_info(infos, i) if infos else {}
                self.recorders[i].begin_episode(current[i], seeds[i], None, o, info)

    def loop(self, bar: Any) -> int:
        """Step every sub-env until the queue is empty and all are idle; returns steps."""
        # the per-step path reads locals only (the vector benchmark measures it): a batch is
        # split into rows once, and only the rows whose episode ended do more than add_step
        vec, n, current = self.vec, self.n, self.current
        policies, recorders, committer = self.policies, self.recorders, self.committer
        single_act = self.single_act
        obs_rows, act_rows = _splitter(self.single_obs, n), _splitter(single_act, n)
        actions_buf = create_empty_array(single_act, n)
        # without infos a recorder's finished bytes grow by its ending episode's alone: the
        # committer's window is then counted on from one sum per step, else summed each time
        keep_infos = any(r.record_infos for r in recorders)  # else a sub-env's info is unused
        fixed = committer is not None and not keep_infos
        steps = 0
        started = time.perf_counter()
        mask = np.ones(n, bool)
        seeds = self.assign(mask)
        obs, infos = vec.reset(seed=seeds)
        self.begin(mask, seeds, obs, infos if keep_infos else None)
        rows = self.rows
        active = [i for i in range(n) if current[i] is not None]
        while active:
            if rows is not None:  # one call for the batch; idle rows' actions are discarded
                batch = rows.act_rows(obs, n)
                actions = act_rows(batch)
            else:
                per_env_obs = obs_rows(obs)
                actions = [
                    policies[i].act(per_env_obs[i])
                    if current[i] is not None
                    else single_act.sample()
                    for i in range(n)
                ]
                batch = concatenate(single_act, actions, actions_buf)
            obs, rewards, terms, truncs, infos = vec.step(batch)
            done = np.logical_or(terms, truncs)
            o, rew, term, trunc = obs_rows(obs), _items(rewards), _items(terms), _items(truncs)
            infos = infos if keep_infos else None
            if not done.any():
                for i in active:
                    info = sub_env_info(infos, i) if infos else {}
                    recorders[i].add_step(actions[i], o[i], rew[i], term[i], trunc[i], info)
                continue
            ended = done.tolist()
            window = None  # (finished, bytes) of the recorders as after_episode would sum them
            for i in active:
                rec = recorders[i]
                info = sub_env_info(infos, i) if infos else {}
                rec.add_step(actions[i], o[i], rew[i], term[i], trunc[i], info)
                if ended[i]:
                    steps += rec.episode_steps
                    held = rec.finished_nbytes
                    rec.end_episode()
                    if committer is not None:
                        if window is None:
                            window = committer.window() if fixed else None
                        else:  # the episode's rows are finished now
                            window = (window[0] + 1, window[1] + rec.finished_nbytes - held)
                        if committer.after_episode(window) or not fixed:
                            window = None  # a commit took episodes: sum again
                    bar.update(1)
            seeds = self.assign(done)
            # a fresh options dict each time: SyncVectorEnv pops "reset_mask" from it
            obs, infos = vec.reset(seed=seeds, options={"reset_mask": done})
            self.begin(done, seeds, obs, infos if keep_infos else None)
            active = [i for i in range(n) if current[i] is not None]
            show_rate(bar, steps, started, f"{n} envs")
        return steps

    def discard(self) -> None:
        """Drop every sub-env's unfinished episode."""
        for rec in self.recorders:
            rec.discard_episode()

    def reword(self, e: BaseException, step_timeout: float | None) -> None:
        """Raise ``e`` as the one line naming the running episodes (or return to keep it)."""
        current = self.current
        if isinstance(e, ValueMismatch) and e.sub_env is not None:
            eid = current[e.sub_env]
            episode = eid if eid is not None else f"(none: sub-env {e.sub_env} is idle)"
            raise CollectionError(refusal(episode, e.step, e)) from None
        running = [c for c in current if c is not None]
        if isinstance(e, StepTimeout):
            steps_in = {c: r.episode_steps for c, r in zip(current, self.recorders, strict=True)}
            where = ", ".join(f"episode {c} step {steps_in[c]}" for c in running)
            raise CollectionError(
                f"a step of the vector env ({where}) did not return within "
                f"runner.step_timeout={step_timeout:g} s; the episodes finished before it are "
                "committed: fix the env (or raise runner.step_timeout) and re-run the same "
                "command to resume"
            ) from None
        if isinstance(e, (KeyboardInterrupt, CollectionError, StorageError)) or not isinstance(
            e, Exception
        ):
            return
        raise CollectionError(
            f"vector env failed while running episodes {running}: {type(e).__name__}: {e}; "
            "finished episodes are committed, re-run the same command to resume"
        ) from e


def run_vector_entry_point(
    vec: Any,
    policy: Policy,
    recorder: VectorRecorder,
    committer: Committer,
    episode_ids: EpisodePlan,
    episodes: int,
    entropy: int,
    progress: bool | None = None,
) -> int:
    """Run ``episode_ids`` (of a run of ``episodes``) on a ``vector_entry_point`` env.

    Returns the steps recorded. See the module docstring for the segment rule.
    """
    if vec.metadata.get("autoreset_mode") is not AutoresetMode.NEXT_STEP:
        raise UsageError(
            f"vector env {type(vec).__name__} uses autoreset "
            f"{vec.metadata.get('autoreset_mode')}; vector_entry_point collection needs "
            "NEXT_STEP (Gymnasium's default); use vectorization_mode=sync or async"
        )
    size = segment_episodes(vec.num_envs)
    plan = episode_ids
    bar = progress_bar(len(plan), progress)
    run = _SegmentRun(vec, policy, recorder, committer, entropy, bar)
    try:
        with commit_finished_on_error(committer, recorder.discard, run.reword):
            for seg in plan.segments(size):  # lazily: a plan of 10**12 ids costs nothing up front
                lo, hi = seg * size, min(seg * size + size, episodes)
                run.segment(lo, plan.wanted(lo, hi))
    finally:
        bar.close()
    committer.flush()
    return run.steps


class _SegmentRun:
    """One ``run_vector_entry_point`` call: its segments' step loop and its failure."""

    def __init__(
        self,
        vec: Any,
        policy: Policy,
        recorder: VectorRecorder,
        committer: Committer,
        entropy: int,
        bar: Any,
    ) -> None:
        self.vec = vec
        self.n = n = vec.num_envs
        self.policy = policy
        self.act = batch_actor(policy, vec.single_observation_space, vec.single_action_space, n)
        self.recorder = recorder
        self.committer = committer
        self.entropy = entropy
        self.bar = bar
        self.steps = 0
        self.started = time.perf_counter()

    def segment(self, lo: int, wanted: np.ndarray) -> None:
        """Run the segment of ids ``lo, lo + 1, ...`` until every episode it started ends.

        ``wanted[k]``: id ``lo + k`` is recorded (else run, as the stream needs, unrecorded).
        """
        vec, n, act, recorder, committer = self.vec, self.n, self.act, self.recorder, self.committer
        bar, started, steps = self.bar, self.started, self.steps
        last = lo + int(np.flatnonzero(wanted)[-1])
        next_id = lo
        # the segment's ids in start order, -1 for those not to record (e.g. committed)
        seg_ids = np.where(wanted, np.arange(lo, lo + len(wanted), dtype=np.int64), -1)

        def new_ids(k: int) -> np.ndarray:
            """The next ``k`` ids in start order; -1 for ids not to record."""
            nonlocal next_id
            ids = seg_ids[next_id - lo : next_id - lo + k]
            next_id += k
            if len(ids) < k:  # past the segment's end: these episodes are not recorded
                ids = np.concatenate([ids, np.full(k - len(ids), -1, np.int64)])
            return ids

        obs, infos = vec.reset(seed=env_seed(self.entropy, lo))
        self.policy.reset(policy_seed(self.entropy, lo))
        recorder.begin(np.arange(n), new_ids(n), obs, infos)
        restart = np.zeros(n, bool)  # NEXT_STEP: these sub-envs reset on this step
        finished = recorder.num_finished
        # np.count_nonzero, not ndarray.any(): ~0.2 against ~1-1.7 us, twice a vector step
        while next_id <= last or np.count_nonzero(recorder.recording):
            actions = act(obs)
            recording = recorder.recording
            obs, rewards, terms, truncs, infos = vec.step(actions)
            if np.count_nonzero(restart):  # NEXT_STEP: these sub-envs return a reset obs
                stepped = ~restart
                starting = np.flatnonzero(restart)
                steps += np.count_nonzero(recording & stepped)
                recorder.record(
                    obs,
                    infos,
                    actions,
                    rewards,
                    terms,
                    truncs,
                    stepped=stepped,
                    begin=starting,
                    episode_ids=new_ids(len(starting)),
                )
            else:
                steps += np.count_nonzero(recording)
                recorder.record(obs, infos, actions, rewards, terms, truncs)
            restart = np.logical_or(terms, truncs)
            if recorder.num_finished != finished:
                bar.update(recorder.num_finished - finished)
                committer.after_episode()
                finished = recorder.num_finished
                show_rate(bar, steps, started, f"{n} envs")
        self.steps = steps

    def reword(self, e: BaseException) -> None:
        """Raise ``e`` as the one line naming the open episodes (or return to keep it)."""
        if isinstance(e, (KeyboardInterrupt, CollectionError, StorageError)) or not isinstance(
            e, Exception
        ):
            return
        running = self.recorder.open_ids
        raise CollectionError(
            f"vector env failed while running episodes {running[running >= 0].tolist()}: "
            f"{type(e).__name__}: {e}; finished episodes are committed, re-run the same "
            "command to resume"
        ) from e
