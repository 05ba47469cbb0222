"""Tests of the MineRL-style training iterators (``curation.pipeline``).

The module docstring of ``curation.pipeline`` is the spec: ``batch_iter`` draws sequences
uniformly with replacement from a window of blocks (about ``total_steps`` transitions per
epoch), sequences never span two episodes and are zero-padded (``mask`` False) only when the
episode is shorter than ``seq_len``, ``done`` is termination only, the same seed gives the same
batches whatever ``num_workers``, and reader processes never outlive the iterator.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from collector.collect import collect
from collector.data_collector import DataCollector
from collector.errors import CorruptDatasetError, HarvestError, ReaderError, UsageError
from curation import Dataset, load_dataset, pipeline

BLOCK_ROWS = 200

# --------------------------------------------------------------------------------------------
# helpers


def make_dataset(
    env: str = "CartPole-v1", episodes: int = 200, dataset_id: str = "test/cartpole-v0", **kw: Any
) -> Dataset:
    """Collect a small random-policy dataset with several shards; load it in small blocks."""
    cfg = {
        "env": env,
        "episodes": episodes,
        "seed": 0,
        "dataset_id": dataset_id,
        "policy": {"_target_": "collector.policies.RandomPolicy"},
        "checkpoint": {"every_episodes": kw.pop("every_episodes", 25)},
        "storage": {"shard_mb": 0.001},  # tiny: the per-checkpoint shards are kept
    }
    collect(cfg)
    return load_dataset(dataset_id, block_rows=BLOCK_ROWS, **kw)


def pendulum() -> Dataset:
    """20 Pendulum episodes: always 200 steps, truncated, never terminated."""
    return make_dataset("Pendulum-v1", 20, "test/pendulum-v0", every_episodes=5)


def by_id(ds: Dataset) -> dict[int, Any]:
    return {ep.id: ep for ep in ds}


def leaves(value: Any) -> list[Any]:
    """Leaves of a nested obs/action value in a fixed order (dict keys sorted)."""
    if isinstance(value, dict):
        return [x for k in sorted(value) for x in leaves(value[k])]
    if isinstance(value, tuple):
        return [x for v in value for x in leaves(v)]
    return [value]


def batch_arrays(batch: Any) -> list[Any]:
    """Everything a batch carries, flattened to comparable leaves."""
    obs, act, rew, nxt, done = batch
    out = [*leaves(obs), *leaves(act), rew, *leaves(nxt), done]
    out += [batch.terminated, batch.truncated, batch.mask]
    if batch.metadata is not None:
        out += [batch.metadata[k] for k in sorted(batch.metadata)]
    return out


def assert_same_batches(a: list[Any], b: list[Any]) -> None:
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        for u, v in zip(batch_arrays(x), batch_arrays(y), strict=True):
            if isinstance(u, list):
                assert u == v, f"batch {i} differs"
            else:
                np.testing.assert_array_equal(u, v, err_msg=f"batch {i} differs")


def reader_children(exclude: set[int] | None = None) -> list[Any]:
    """The live harvest-reader child processes (minus the ``exclude`` pids)."""
    return [
        p
        for p in mp.active_children()
        if p.name.startswith("harvest-reader") and p.pid not in (exclude or set())
    ]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def assert_reaped(pids: list[int], timeout: float = 3.0) -> None:
    """The reader processes are gone (and reaped) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        live = {p.pid for p in mp.active_children()}
        if not (live & set(pids)) and not any(pid_alive(p) for p in pids):
            break
        time.sleep(0.05)
    live = {p.pid for p in mp.active_children()}
    assert not live & set(pids), f"reader processes still children: {live & set(pids)}"
    assert not [p for p in pids if pid_alive(p)], "reader processes still exist"


def wait_no_new_readers(before: set[int], timeout: float = 3.0) -> None:
    """No reader process started since ``before`` is still alive after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while reader_children(before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not reader_children(before)


def run_with_timeout(fn: Callable[[], Any], timeout: float) -> Any:
    """Run ``fn`` in a thread; re-raise what it raised; fail (instead of hanging) on timeout."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # re-raised in the test thread
            box["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        pytest.fail(f"iterator hung for more than {timeout} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def check_rows(batch: Any, episodes: dict[int, Any], seq_len: int) -> int:
    """Check every row of a ``include_metadata=True`` batch against the episodes it names.

    Returns how many rows were padded.
    """
    obs, act, rew, nxt, done = batch
    meta = batch.metadata
    padded = 0
    pairs = zip(meta["episode_id"].tolist(), meta["step"].tolist(), strict=True)
    for b, (eid, t0) in enumerate(pairs):
        ep = episodes[eid]
        n = len(ep)
        mask = batch.mask[b]
        if n >= seq_len:
            # a full sequence inside the episode: never spans into the next one
            assert 0 <= t0 <= n - seq_len
            assert mask.all()
        else:
            # too short: starts at 0, padded after its last step
            assert t0 == 0
            assert mask.tolist() == [j < n for j in range(seq_len)]
            padded += 1
        valid = int(mask.sum())
        steps = np.arange(t0, t0 + valid)
        np.testing.assert_array_equal(obs[b, :valid], ep.observations[steps])
        np.testing.assert_array_equal(nxt[b, :valid], ep.observations[steps + 1])
        np.testing.assert_array_equal(act[b, :valid], ep.actions[steps])
        np.testing.assert_array_equal(rew[b, :valid], ep.rewards[steps])
        np.testing.assert_array_equal(batch.terminated[b, :valid], ep.terminations[steps])
        np.testing.assert_array_equal(batch.truncated[b, :valid], ep.truncations[steps])
        np.testing.assert_array_equal(done[b, :valid], ep.terminations[steps])
        # next_obs[t] == obs[t + 1] inside the sequence
        np.testing.assert_array_equal(nxt[b, : valid - 1], obs[b, 1:valid])
        # padding is zero everywhere
        for arr in (obs, nxt, act, rew, done, batch.terminated, batch.truncated):
            assert not np.any(arr[b, valid:]), "padded positions must be zero"
    return padded


# --------------------------------------------------------------------------------------------
# 1. batch_iter: shapes, done, ground truth, episode boundaries, padding


def test_batch_iter_shapes_and_five_tuple() -> None:
    ds = make_dataset()
    p = ds.pipeline(num_workers=0)
    batch = next(p.batch_iter(batch_size=6, seq_len=5, seed=0))
    assert isinstance(batch, tuple) and len(batch) == 5
    obs, act, rew, nxt, done = batch
    assert obs.shape == (6, 5, 4) and obs.dtype == np.float32
    assert nxt.shape == (6, 5, 4)
    assert act.shape == (6, 5)
    assert rew.shape == (6, 5)
    assert done.shape == (6, 5) and done.dtype == bool
    for extra in (batch.mask, batch.terminated, batch.truncated):
        assert extra.shape == (6, 5)
    assert batch.metadata is None
    meta = next(p.batch_iter(6, 5, seed=0, include_metadata=True)).metadata
    assert set(meta) == {"episode_id", "step"}
    assert meta["episode_id"].shape == (6,) and meta["step"].shape == (6,)


def test_batch_iter_rejects_bad_arguments() -> None:
    p = make_dataset(episodes=10).pipeline(num_workers=0)
    for kw in ({"batch_size": 0}, {"seq_len": 0}, {"preload_buffer_size": 0}):
        args = {"batch_size": 2, "seq_len": 2, **kw}
        with pytest.raises(ValueError):
            next(p.batch_iter(**args))
    with pytest.raises(ValueError):
        make_dataset(episodes=10, dataset_id="test/other-v0").pipeline(num_workers=-1)


def test_done_is_termination_only_with_truncated_episodes() -> None:
    ds = pendulum()
    assert ds.episodes()["truncated"].all() and not ds.episodes()["terminated"].any()
    p = ds.pipeline(num_workers=0)
    # seq_len == episode length: every sequence is a whole episode ending in a truncation
    batches = list(p.batch_iter(4, 200, num_epochs=1, seed=1))
    assert batches
    for batch in batches:
        _, _, _, _, done = batch
        assert batch.mask.all()
        assert batch.truncated[:, -1].all()
        assert not batch.truncated[:, :-1].any()
        assert not done.any() and not batch.terminated.any()
    # short sequences: truncated steps are sampled but done stays False
    seen_truncated = 0
    for batch in p.batch_iter(64, 1, num_epochs=2, seed=2):
        seen_truncated += int(batch.truncated.sum())
        assert not batch[4].any()
    assert seen_truncated > 0


def test_done_equals_terminated_on_cartpole() -> None:
    ds = make_dataset()
    seen = 0
    for batch in ds.pipeline(num_workers=0).batch_iter(16, 8, num_epochs=1, seed=3):
        np.testing.assert_array_equal(batch[4], batch.terminated)
        assert not batch.truncated.any()  # random CartPole episodes end far before 500 steps
        seen += int(batch.terminated.sum())
    assert seen > 0


def test_sampled_rows_match_dataset_episodes_with_metadata() -> None:
    ds = make_dataset()
    episodes = by_id(ds)
    rows = 0
    for batch in ds.pipeline(num_workers=0).batch_iter(
        16, 4, num_epochs=1, seed=4, include_metadata=True
    ):
        check_rows(batch, episodes, 4)
        rows += len(batch.mask)
    assert rows > 0


def test_sampled_rows_are_transitions_of_the_dataset() -> None:
    """Without metadata: every valid (obs, act, rew, next_obs) is a row of to_transitions()."""
    ds = make_dataset()
    tr = ds.to_transitions()
    index: dict[bytes, list[int]] = {}
    for i, row in enumerate(tr["observations"]):
        index.setdefault(row.tobytes(), []).append(i)
    checked = 0
    for batch in ds.pipeline(num_workers=0).batch_iter(8, 3, num_epochs=1, seed=5):
        obs, act, rew, nxt, done = batch
        for b, j in zip(*np.nonzero(batch.mask), strict=True):
            hits = index.get(obs[b, j].tobytes(), [])
            assert any(
                tr["actions"][i] == act[b, j]
                and tr["rewards"][i] == rew[b, j]
                and np.array_equal(tr["next_observations"][i], nxt[b, j])
                and tr["terminals"][i] == done[b, j]
                and tr["timeouts"][i] == batch.truncated[b, j]
                for i in hits
            ), f"row {b}, step {j} is not a transition of the dataset"
            if j + 1 < batch.mask.shape[1] and batch.mask[b, j + 1]:
                np.testing.assert_array_equal(nxt[b, j], obs[b, j + 1])
            checked += 1
    assert checked >= ds.total_steps


def test_padding_only_for_episodes_shorter_than_seq_len() -> None:
    ds = make_dataset()
    lengths = ds.episodes()["length"]
    seq_len = 16
    assert (lengths < seq_len).any() and (lengths >= seq_len).any()  # the test needs both
    episodes = by_id(ds)
    padded = 0
    for batch in ds.pipeline(num_workers=0).batch_iter(
        16, seq_len, num_epochs=4, seed=6, include_metadata=True
    ):
        padded += check_rows(batch, episodes, seq_len)
    assert padded > 0


def test_sequences_never_span_episodes_with_long_window() -> None:
    """A wide window (many blocks merged) still keeps every sequence inside one episode."""
    ds = make_dataset()
    episodes = by_id(ds)
    for batch in ds.pipeline(num_workers=0).batch_iter(
        32, 12, num_epochs=1, preload_buffer_size=6, seed=7, include_metadata=True
    ):
        check_rows(batch, episodes, 12)


# --------------------------------------------------------------------------------------------
# 2. seeds, epochs, coverage


@pytest.mark.parametrize("num_epochs", [1, 2], ids=["1-epoch", "2-epochs"])
def test_same_seed_same_batches_whatever_num_workers(num_epochs: int) -> None:
    """Module docstring: "The same seed gives the same batches, whatever num_workers"."""
    ds = make_dataset()
    runs = {
        n: list(
            ds.pipeline(num_workers=n).batch_iter(
                8, 4, num_epochs=num_epochs, seed=11, include_metadata=True
            )
        )
        for n in (0, 1, 2)
    }
    again = list(
        ds.pipeline(num_workers=0).batch_iter(
            8, 4, num_epochs=num_epochs, seed=11, include_metadata=True
        )
    )
    assert_same_batches(runs[0], again)
    assert_same_batches(runs[0], runs[1])
    assert_same_batches(runs[0], runs[2])


def test_same_seed_same_batches_endless_epochs() -> None:
    """num_epochs=-1: the first batches (spanning several epochs) do not depend on workers."""
    ds = make_dataset(episodes=60, every_episodes=10)
    per_epoch = -(-ds.total_steps // 32)
    take = 3 * per_epoch
    a = list(islice(ds.pipeline(num_workers=0).batch_iter(8, 4, seed=12), take))
    b = list(islice(ds.pipeline(num_workers=2).batch_iter(8, 4, seed=12), take))
    assert_same_batches(a, b)


def test_different_seeds_differ() -> None:
    ds = make_dataset()
    p = ds.pipeline(num_workers=0)
    a = list(islice(p.batch_iter(8, 4, seed=1, include_metadata=True), 5))
    b = list(islice(p.batch_iter(8, 4, seed=2, include_metadata=True), 5))
    assert any(
        not np.array_equal(x.metadata["episode_id"], y.metadata["episode_id"])
        or not np.array_equal(x.metadata["step"], y.metadata["step"])
        for x, y in zip(a, b, strict=True)
    )
    assert any(not np.array_equal(x[0], y[0]) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize(("batch_size", "seq_len"), [(32, 1), (8, 5)])
def test_one_epoch_yields_about_total_steps(
    num_workers: int, batch_size: int, seq_len: int
) -> None:
    """Bound: each block is the oldest once and yields ceil(rows / (B * L)) batches, so

    total_steps <= transitions < total_steps + blocks * B * L   (transitions = batches * B * L,
    padded positions included). The iterator must also stop on its own.
    """
    ds = make_dataset()
    p = ds.pipeline(num_workers=num_workers)
    blocks = len(np.unique(ds.snapshot.block))
    batches = run_with_timeout(
        lambda: sum(1 for _ in p.batch_iter(batch_size, seq_len, num_epochs=1, seed=13)), 30
    )
    per_batch = batch_size * seq_len
    drawn = batches * per_batch
    assert ds.total_steps <= drawn < ds.total_steps + blocks * per_batch


def test_seq_len_1_covers_every_transition_about_uniformly() -> None:
    ds = make_dataset()
    info = ds.episodes()
    lengths = info["length"]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    pos_of = {int(e): i for i, e in enumerate(info["id"])}
    epochs, batch_size = 30, 8
    counts = np.zeros(ds.total_steps, np.int64)
    for batch in ds.pipeline(num_workers=0).batch_iter(
        batch_size, 1, num_epochs=epochs, seed=14, include_metadata=True
    ):
        ep = np.array([pos_of[int(e)] for e in batch.metadata["episode_id"]])
        np.add.at(counts, starts[ep] + batch.metadata["step"], 1)
    blocks = len(np.unique(ds.snapshot.block))
    mean = counts.mean()
    # about once per transition per epoch (plus the per-block rounding of the bound above)
    assert epochs <= mean < epochs * (1 + blocks * batch_size / ds.total_steps)
    assert counts.min() > 0, "some transitions were never drawn"
    # with replacement, counts are about Poisson(mean): dispersion ~1; allow a loose 1.6
    dispersion = counts.var() / mean
    assert dispersion < 1.6, f"counts too uneven: var/mean = {dispersion:.2f}"
    # no episode is drawn far more or less often than its length says
    per_episode = np.add.reduceat(counts, starts) / lengths / mean
    assert 0.6 < per_episode.min() and per_episode.max() < 1.6


# --------------------------------------------------------------------------------------------
# 3. views


def test_batch_iter_on_view_yields_only_its_episodes() -> None:
    ds = make_dataset()
    view = ds.filter_episodes(lambda e: e.id % 2 == 0)
    assert 0 < len(view) < len(ds)
    episodes = by_id(view)
    seen: set[int] = set()
    for batch in view.pipeline(num_workers=0).batch_iter(
        16, 4, num_epochs=2, seed=15, include_metadata=True
    ):
        ids = batch.metadata["episode_id"].tolist()
        assert all(i % 2 == 0 for i in ids), ids
        check_rows(batch, episodes, 4)
        seen.update(ids)
    assert seen == set(view.episode_indices.tolist())


def test_batch_iter_on_view_epoch_yields_about_view_total_steps() -> None:
    """An epoch of a view yields about the *view's* total_steps (same bound as above)."""
    ds = make_dataset()
    view = ds.filter_episodes(lambda e: e.id % 2 == 0)
    p = view.pipeline(num_workers=0)
    blocks = len(
        np.unique(ds.snapshot.block[np.searchsorted(ds.snapshot.ids, view.episode_indices)])
    )
    batch_size = 16
    drawn = batch_size * sum(1 for _ in p.batch_iter(batch_size, 1, num_epochs=1, seed=16))
    assert view.total_steps <= drawn < view.total_steps + blocks * batch_size, (
        f"one epoch over a view of {view.total_steps} steps drew {drawn} transitions "
        f"(the whole dataset has {ds.total_steps})"
    )


def test_sarsd_and_batch_iter_on_empty_view() -> None:
    ds = make_dataset(episodes=20)
    view = ds.filter_episodes(lambda e: False)
    p = view.pipeline(num_workers=0)
    assert list(p.batch_iter(4, 2, num_epochs=1)) == []
    assert list(p.sarsd_iter(num_epochs=1)) == []
    assert p.get_trajectory_names() == []


# --------------------------------------------------------------------------------------------
# 4. lifecycle of the reader processes


def _start(it: Iterator[Any], n: int = 3) -> list[int]:
    """Pull ``n`` items and return the pids of the readers this started."""
    before = {p.pid for p in reader_children()}
    for _ in range(n):
        next(it)
    pids = [p.pid for p in reader_children(before)]
    assert len(pids) == 2, "expected two harvest-reader processes"
    assert all(pid_alive(pid) for pid in pids)
    return pids


@pytest.mark.parametrize("how", ["close", "del"])
@pytest.mark.parametrize("kind", ["batch_iter", "sarsd_iter"])
def test_stopping_early_reaps_workers(how: str, kind: str) -> None:
    p = make_dataset().pipeline(num_workers=2)
    it = p.batch_iter(8, 4, seed=0) if kind == "batch_iter" else p.sarsd_iter(seed=0)
    pids = _start(it)
    if how == "close":
        it.close()
    else:
        del it  # the generator is finalized when its last reference goes
    assert_reaped(pids)


def test_break_out_of_for_loop_reaps_workers() -> None:
    p = make_dataset().pipeline(num_workers=2)
    before = {c.pid for c in reader_children()}
    pids: list[int] = []
    for i, _ in enumerate(p.batch_iter(8, 4, seed=0)):
        if i == 3:
            pids = [c.pid for c in reader_children(before)]
            break
    assert len(pids) == 2
    assert_reaped(pids)


@pytest.mark.parametrize("exc", [ValueError, KeyboardInterrupt])
def test_exception_inside_loop_reaps_workers(exc: type[BaseException]) -> None:
    p = make_dataset().pipeline(num_workers=2)
    before = {c.pid for c in reader_children()}
    pids: list[int] = []
    with pytest.raises(exc):
        for i, _ in enumerate(p.batch_iter(8, 4, seed=0)):
            if i == 3:
                pids = [c.pid for c in reader_children(before)]
                raise exc("stop")
    assert len(pids) == 2
    assert_reaped(pids)


def test_exhausted_iterator_reaps_workers() -> None:
    p = make_dataset(episodes=40).pipeline(num_workers=2)
    before = {c.pid for c in reader_children()}
    pids: list[int] = []
    for _ in p.batch_iter(8, 4, num_epochs=1, seed=0):
        pids = pids or [c.pid for c in reader_children(before)]
    assert len(pids) == 2
    assert_reaped(pids)


def _worker_state(pid: int) -> str:
    """What an idle reader is blocked on: "read" (it holds the task queue) or "lock"."""
    try:
        wchan = Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return "?"
    if "pipe" in wchan:
        return "read"
    if "futex" in wchan:
        return "lock"
    return "?"


@pytest.mark.parametrize("victim", ["task-reader", "lock-waiter"])
def test_killed_worker_raises_runtime_error(victim: str) -> None:
    """SIGKILL one reader while iterating: the iterator raises RuntimeError naming its pid.

    Two idle readers wait on the task queue: one inside ``get`` reading the pipe (holding the
    queue's read lock), the other waiting for that lock. Both deaths must be reported; the
    test picks which one to kill from ``/proc/<pid>/wchan``.
    """
    p = make_dataset().pipeline(num_workers=2)
    it = p.batch_iter(8, 4, seed=0)
    try:
        pids = _start(it)
        want = "read" if victim == "task-reader" else "lock"
        target, states = None, {}
        deadline = time.monotonic() + 3.0
        while target is None and time.monotonic() < deadline:
            states = {pid: _worker_state(pid) for pid in pids}
            if sorted(states.values()) == ["lock", "read"]:
                target = next(pid for pid, s in states.items() if s == want)
            else:
                time.sleep(0.05)
        if target is None:
            pytest.skip(f"cannot tell the readers' states from /proc/<pid>/wchan ({states})")
        os.kill(target, signal.SIGKILL)

        def consume() -> int:
            n = 0
            end = time.monotonic() + 5.0
            for _ in it:
                n += 1
                if time.monotonic() > end:
                    break
            return n

        with pytest.raises(RuntimeError, match=str(target)):
            n = run_with_timeout(consume, 20)
            pytest.fail(
                f"reader {target} ({want}) was SIGKILLed but the iterator kept yielding for "
                f"5 s ({n} more batches) without raising"
            )
        assert not pid_alive(target)
    finally:
        it.close()  # never leak readers into later tests, even when this test fails
    assert_reaped(pids)


def test_all_workers_killed_raises_runtime_error() -> None:
    p = make_dataset().pipeline(num_workers=2)
    it = p.batch_iter(8, 4, seed=0)
    try:
        pids = _start(it)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        with pytest.raises(RuntimeError, match="|".join(map(str, pids))):
            run_with_timeout(lambda: sum(1 for _ in it), 20)
    finally:
        it.close()
    assert_reaped(pids)


# --------------------------------------------------------------------------------------------
# 5. shards that go missing


@pytest.mark.parametrize("num_workers", [0, 1])
def test_shard_missing_before_iteration_raises(num_workers: int) -> None:
    ds = make_dataset()
    for f in (Path(ds.spec.data_path) / "data").glob("*.h5"):
        f.unlink()
    p = ds.pipeline(num_workers=num_workers)
    before = {c.pid for c in reader_children()}
    with pytest.raises(CorruptDatasetError, match="missing"):
        run_with_timeout(lambda: next(p.batch_iter(8, 4, seed=0)), 20)
    wait_no_new_readers(before)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_shard_missing_mid_iteration_raises(num_workers: int) -> None:
    """Delete every shard after the first batch: shards not yet opened are gone -> error."""
    ds = make_dataset()
    files = sorted((Path(ds.spec.data_path) / "data").glob("*.h5"))
    assert len(files) >= 6  # more shards than blocks read ahead by the first batch
    p = ds.pipeline(num_workers=num_workers)
    before = {c.pid for c in reader_children()}
    it = p.batch_iter(8, 4, num_epochs=1, seed=0)
    next(it)
    assert len(reader_children(before)) == num_workers
    for f in files:
        f.unlink()
    with pytest.raises(CorruptDatasetError, match="missing"):
        run_with_timeout(lambda: sum(1 for _ in it), 20)
    wait_no_new_readers(before)


# --------------------------------------------------------------------------------------------
# 6. sarsd_iter


def _sarsd(ds: Dataset, num_workers: int, **kw: Any) -> list[tuple[Any, ...]]:
    return list(ds.pipeline(num_workers=num_workers).sarsd_iter(include_metadata=True, **kw))


def test_sarsd_iter_yields_each_episode_once_in_consecutive_segments() -> None:
    ds = make_dataset()
    episodes = by_id(ds)
    max_len = 16
    items = _sarsd(ds, 0, num_epochs=1, max_sequence_len=max_len, seed=21)
    order: list[int] = []
    segments: dict[int, list[tuple[Any, ...]]] = {}
    for item in items:
        meta = item[5]
        if not order or order[-1] != meta["id"]:
            assert meta["id"] not in segments, f"episode {meta['id']} split or repeated"
            order.append(meta["id"])
        segments.setdefault(meta["id"], []).append(item)
    assert sorted(order) == sorted(episodes)
    for eid, segs in segments.items():
        ep = episodes[eid]
        starts = [s[5]["start"] for s in segs]
        assert starts == list(range(0, len(ep), max_len))
        for obs, _act, rew, nxt, done, meta in segs:
            assert 1 <= len(rew) <= max_len
            assert meta["seed"] == ep.seed
            assert obs.shape == (len(rew), 4) and nxt.shape == (len(rew), 4)
            np.testing.assert_array_equal(meta["terminated"], done)
        np.testing.assert_array_equal(np.concatenate([s[0] for s in segs]), ep.observations[:-1])
        np.testing.assert_array_equal(np.concatenate([s[3] for s in segs]), ep.observations[1:])
        np.testing.assert_array_equal(np.concatenate([s[1] for s in segs]), ep.actions)
        np.testing.assert_array_equal(np.concatenate([s[2] for s in segs]), ep.rewards)
        np.testing.assert_array_equal(np.concatenate([s[4] for s in segs]), ep.terminations)
        np.testing.assert_array_equal(
            np.concatenate([s[5]["truncated"] for s in segs]), ep.truncations
        )


def test_sarsd_iter_done_is_termination_only() -> None:
    ds = pendulum()
    items = _sarsd(ds, 0, num_epochs=1, max_sequence_len=64, seed=22)
    assert sum(len(i[2]) for i in items) == ds.total_steps
    assert not any(i[4].any() for i in items)
    assert sum(int(i[5]["truncated"].sum()) for i in items) == len(ds)


def _sarsd_key(items: list[tuple[Any, ...]]) -> list[Any]:
    return [(m["id"], m["start"], len(r)) for *_, r, _, _, m in items]


def test_sarsd_iter_seeded_order() -> None:
    ds = make_dataset()
    a = _sarsd(ds, 0, num_epochs=1, max_sequence_len=32, seed=23)
    b = _sarsd(ds, 0, num_epochs=1, max_sequence_len=32, seed=23)
    c = _sarsd(ds, 0, num_epochs=1, max_sequence_len=32, seed=24)
    assert _sarsd_key(a) == _sarsd_key(b)
    assert _sarsd_key(a) != _sarsd_key(c)
    for x, y in zip(a, b, strict=True):
        for u, v in zip(x[:5], y[:5], strict=True):
            np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("num_epochs", [1, 2], ids=["1-epoch", "2-epochs"])
def test_sarsd_iter_same_output_whatever_num_workers(num_epochs: int) -> None:
    ds = make_dataset()
    a = _sarsd(ds, 0, num_epochs=num_epochs, max_sequence_len=32, seed=25)
    b = _sarsd(ds, 2, num_epochs=num_epochs, max_sequence_len=32, seed=25)
    assert _sarsd_key(a) == _sarsd_key(b)
    for x, y in zip(a, b, strict=True):
        for u, v in zip(x[:5], y[:5], strict=True):
            np.testing.assert_array_equal(u, v)
    assert sum(len(i[2]) for i in a) == num_epochs * ds.total_steps


def test_sarsd_iter_queue_size_and_bad_args() -> None:
    ds = make_dataset(episodes=40)
    p = ds.pipeline(num_workers=2)
    a = [(m["id"], m["start"]) for *_, m in p.sarsd_iter(1, 8, queue_size=2, seed=1,
                                                          include_metadata=True)]  # fmt: skip
    assert p.num_workers == 2  # restored
    b = [(m["id"], m["start"]) for *_, m in ds.pipeline(num_workers=0).sarsd_iter(
        1, 8, seed=1, include_metadata=True)]  # fmt: skip
    assert a == b
    with pytest.raises(ValueError):
        next(p.sarsd_iter(max_sequence_len=0))


# --------------------------------------------------------------------------------------------
# 7. load_data and the descriptive API


@pytest.mark.parametrize("skip", [0, 1, 4])
def test_load_data_skip_interval(skip: int) -> None:
    ds = make_dataset(episodes=20)
    p = ds.pipeline(num_workers=0)
    eid = int(ds.episode_indices[7])
    ep = ds.iterate_episodes([eid]).__next__()
    items = list(p.load_data(str(eid), skip_interval=skip, include_metadata=True))
    steps = list(range(0, len(ep), skip + 1))
    assert [m["step"] for *_, m in items] == steps
    for (obs, act, rew, nxt, done, meta), t in zip(items, steps, strict=True):
        np.testing.assert_array_equal(obs, ep.observations[t])
        np.testing.assert_array_equal(nxt, ep.observations[t + 1])
        assert act == ep.actions[t]
        assert rew == ep.rewards[t]
        assert done == bool(ep.terminations[t])
        assert meta["id"] == eid and meta["seed"] == ep.seed
        assert meta["terminated"] == bool(ep.terminations[t])
        assert meta["truncated"] == bool(ep.truncations[t])
    plain = list(p.load_data(eid, skip_interval=skip))
    assert len(plain) == len(steps) and all(len(i) == 5 for i in plain)


def test_descriptive_api_matches_dataset() -> None:
    ds = make_dataset(episodes=30)
    p = ds.pipeline(num_workers=0)
    names = p.get_trajectory_names()
    assert names == [str(i) for i in ds.episode_indices.tolist()]
    assert all(isinstance(n, str) for n in names)
    assert p.observation_space == ds.observation_space
    assert p.action_space == ds.action_space
    assert p.spec == ds.spec
    view = ds.filter_episodes(lambda e: e.id % 3 == 0)
    assert view.pipeline(num_workers=0).get_trajectory_names() == [str(i) for i in range(0, 30, 3)]
    with pytest.raises(KeyError):
        next(p.load_data(10_000))


# --------------------------------------------------------------------------------------------
# 8. nested observation spaces (Dict with Box, Discrete, Text)


class NestedEnv(gym.Env):
    """Dict observations; episode ``k`` (by reset seed) lasts ``2 + seed % 7`` steps."""

    metadata = {"render_modes": []}

    def __init__(self) -> None:
        self.observation_space = spaces.Dict(
            {
                "pos": spaces.Box(-10.0, 10.0, (2,), np.float32),
                "mode": spaces.Discrete(3),
                "note": spaces.Text(6, min_length=1),
            }
        )
        self.action_space = spaces.Discrete(2)
        self.t = 0
        self.length = 1

    def _obs(self) -> dict[str, Any]:
        return {
            "pos": self.np_random.uniform(-1, 1, 2).astype(np.float32),
            "mode": int(self.t % 3),
            "note": f"s{self.t}x{self.length}",
        }

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        self.t = 0
        self.length = 2 + (seed or 0) % 7
        return self._obs(), {}

    def step(self, action: Any) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        self.t += 1
        done = self.t >= self.length
        return self._obs(), float(action) + 0.5, done and self.t % 2 == 0, done, {}


def nested_dataset() -> Dataset:
    env = DataCollector(NestedEnv())
    rng = np.random.default_rng(0)
    for k in range(30):
        env.reset(seed=k)
        while True:
            _, _, term, trunc, _ = env.step(int(rng.integers(2)))
            if term or trunc:
                break
    env.create_dataset("test/nested-v0")
    env.close()
    return load_dataset("test/nested-v0", block_rows=20)


def test_batch_iter_nested_dict_obs_with_text() -> None:
    ds = nested_dataset()
    episodes = by_id(ds)
    B, L = 4, 3
    n = 0
    for batch in ds.pipeline(num_workers=2).batch_iter(
        B, L, num_epochs=1, seed=31, include_metadata=True
    ):
        obs, act, rew, nxt, done = batch
        for o in (obs, nxt):
            assert isinstance(o, dict) and set(o) == {"pos", "mode", "note"}
            assert o["pos"].shape == (B, L, 2) and o["pos"].dtype == np.float32
            assert o["mode"].shape == (B, L)
            assert isinstance(o["note"], list) and len(o["note"]) == B
            assert all(isinstance(r, list) and len(r) == L for r in o["note"])
            assert all(isinstance(s, str) for r in o["note"] for s in r)
        assert act.shape == (B, L) and rew.shape == (B, L)
        for b in range(B):
            ep = episodes[int(batch.metadata["episode_id"][b])]
            t0 = int(batch.metadata["step"][b])
            for j in range(L):
                if not batch.mask[b, j]:
                    assert obs["note"][b][j] == "" and nxt["note"][b][j] == ""
                    assert not obs["pos"][b, j].any()
                    continue
                t = t0 + j
                assert t < len(ep)
                np.testing.assert_array_equal(obs["pos"][b, j], ep.observations["pos"][t])
                assert obs["mode"][b, j] == ep.observations["mode"][t]
                assert obs["note"][b][j] == ep.observations["note"][t]
                assert nxt["note"][b][j] == ep.observations["note"][t + 1]
                assert act[b, j] == ep.actions[t] and rew[b, j] == ep.rewards[t]
                assert done[b, j] == ep.terminations[t]
        n += 1
    assert n > 0


def test_sarsd_iter_nested_dict_obs_with_text() -> None:
    ds = nested_dataset()
    episodes = by_id(ds)
    seen = Counter()
    for obs, act, rew, nxt, done, meta in ds.pipeline(num_workers=0).sarsd_iter(
        num_epochs=1, max_sequence_len=3, seed=32, include_metadata=True
    ):
        ep = episodes[meta["id"]]
        a, n = meta["start"], len(rew)
        assert isinstance(obs, dict) and isinstance(nxt, dict)
        assert obs["pos"].shape == (n, 2)
        assert obs["note"] == ep.observations["note"][a : a + n]
        assert nxt["note"] == ep.observations["note"][a + 1 : a + n + 1]
        np.testing.assert_array_equal(obs["mode"], ep.observations["mode"][a : a + n])
        np.testing.assert_array_equal(act, ep.actions[a : a + n])
        np.testing.assert_array_equal(done, ep.terminations[a : a + n])
        seen[meta["id"]] += n
    assert seen == {e.id: len(e) for e in episodes.values()}
    _, _, _, _, _, meta = next(ds.pipeline(num_workers=0).load_data(0, include_metadata=True))
    assert meta["step"] == 0


# --------------------------------------------------------------------------------------------
# 9. torch DataLoader workers (HDF5 handles reopened per process)


def test_torch_dataloader_workers_read_the_same_data() -> None:
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader
    from torch.utils.data import Dataset as TorchDataset

    # a tiny block cache, so that the workers must read HDF5 themselves
    ds = make_dataset(cache_mb=0.0001)

    class Returns(TorchDataset):
        def __init__(self, data: Dataset) -> None:
            self.data = data

        def __len__(self) -> int:
            return len(self.data)

        def __getitem__(self, i: int) -> Any:
            return torch.tensor(float(self.data[i].rewards.sum()), dtype=torch.float64)

    direct = [float(ds[i].rewards.sum()) for i in range(len(ds))]  # opens handles pre-fork
    loader = DataLoader(Returns(ds), batch_size=7, num_workers=2, shuffle=False)
    via_workers = run_with_timeout(lambda: torch.cat([b.reshape(-1) for b in loader]).tolist(), 60)
    assert via_workers == direct
    assert direct == ds.episodes()["return"].tolist()
    # the parent's handles still work after the workers are gone
    assert [float(ds[i].rewards.sum()) for i in range(len(ds))] == direct


def test_stopping_early_with_workers_is_quick_and_never_hangs() -> None:
    """Closing mid-stream must not wait for (or read) blocks the workers were still sending."""
    ds_id = "early/stop-v0"
    collect(
        {
            "env": "CartPole-v1",
            "episodes": 400,
            "seed": 0,
            "dataset_id": ds_id,
            "policy": {"_target_": "collector.policies.RandomPolicy"},
        }
    )
    ds = load_dataset(ds_id, block_rows=500)
    durations: list[float] = []

    def run() -> None:
        for _ in range(5):
            it = ds.pipeline(num_workers=2).batch_iter(64, 1, seed=0)
            next(it)
            start = time.monotonic()
            it.close()
            durations.append(time.monotonic() - start)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "closing batch_iter hung"
    assert len(durations) == 5 and max(durations) < 1.5, durations
    assert not mp.active_children()


def test_shards_of_one_seeded_stream_serve_each_block_once_per_epoch() -> None:
    """``batch_iter(shard=(i, k))``: k consumers (torch DataLoader workers) share one stream."""
    pipe = make_dataset(episodes=60, every_episodes=10).pipeline(num_workers=0)

    def blocks(**kw: Any) -> Counter[int]:
        got: Counter[int] = Counter()
        for batch in pipe.batch_iter(8, 1, num_epochs=2, seed=4, preload_buffer_size=1,
                                     include_metadata=True, **kw):  # fmt: skip
            got[
                int(
                    pipe.dataset.snapshot.block[pipe.dataset.positions][
                        batch.metadata["episode_id"][0]
                    ]
                )
            ] += 1
        return got

    whole = blocks()
    parts = [blocks(shard=(i, 3)) for i in range(3)]
    assert sum(parts, Counter()) == whole and len(whole) > 3
    assert all(parts)  # every shard gets some of the blocks
    with pytest.raises(ValueError, match="shard needs a seed"):
        next(pipe.batch_iter(8, 1, seed=None, shard=(0, 2)))
    with pytest.raises(ValueError, match=r"0 <= index < count"):
        next(pipe.batch_iter(8, 1, seed=0, shard=(2, 2)))


def test_argument_mistakes_are_usage_errors_in_the_family() -> None:
    """Issue 17: what a user gets wrong is a ``UsageError`` (exit 2), still a ``ValueError``."""
    ds = make_dataset(episodes=4)
    p = ds.pipeline(num_workers=0)
    mistakes: list[Callable[[], Any]] = [
        lambda: ds.pipeline(num_workers=-1),
        lambda: next(p.batch_iter(batch_size=0, seq_len=2)),
        lambda: next(p.batch_iter(batch_size=2, seq_len=2, shard=(0, 2))),
        lambda: next(p.sarsd_iter(max_sequence_len=0)),
        lambda: ds.sample_episodes(5),
        lambda: ds.get_normalized_score(1.0),
    ]
    for mistake in mistakes:
        with pytest.raises(UsageError) as caught:
            mistake()
        assert isinstance(caught.value, ValueError) and caught.value.exit_code == 2
    assert issubclass(ReaderError, HarvestError) and issubclass(ReaderError, RuntimeError)


@pytest.mark.parametrize(("seq_len", "frame_stack"), [(1, 1), (4, 2)])
def test_a_window_of_small_blocks_is_gathered_as_one_block(
    monkeypatch: pytest.MonkeyPatch, seq_len: int, frame_stack: int
) -> None:
    """Issue 18: more blocks (a dataset of many shards) cost no more per batch than one.

    A window of small blocks is joined, so each column of a batch is one index even when the
    batch draws from several blocks; the batches are those gathered block by block.
    """
    ds = make_dataset(episodes=60, every_episodes=10)
    kw = {"num_epochs": 1, "seed": 3, "include_metadata": True, "frame_stack": frame_stack}
    blocks_per_gather: Counter[int] = Counter()
    real = pipeline._gather

    def gather(cols: list[np.ndarray], groups: list[Any], idx: np.ndarray) -> np.ndarray:
        blocks_per_gather[len(groups)] += 1
        return real(cols, groups, idx)

    monkeypatch.setattr(pipeline, "_gather", gather)
    joined = list(ds.pipeline(num_workers=0).batch_iter(8, seq_len, **kw))
    assert len(ds.snapshot.block_shard) > 2 and set(blocks_per_gather) == {1}
    monkeypatch.setattr(pipeline, "JOIN_WINDOW_BYTES", 0)
    blocks_per_gather.clear()
    apart = list(ds.pipeline(num_workers=0).batch_iter(8, seq_len, **kw))
    assert max(blocks_per_gather) > 1  # the same draws span blocks
    assert_same_batches(joined, apart)
