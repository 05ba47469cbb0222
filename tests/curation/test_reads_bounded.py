"""Reads bounded by bytes (issue 19 item 5).

Blocks are capped in decompressed bytes (whole episodes), one ``max_memory`` budget bounds
every reader whatever the frame size, worker processes hand blocks over in shared memory and
leave no segment behind on any exit path, and ``frame_stack`` gives the last k observations
of each step without storing frames twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from itertools import islice
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from collector.data_collector import DataCollector
from collector.errors import HarvestWarning, ReaderError
from curation import Dataset, load_dataset
from curation.readahead import BlockStream
from curation.snapshot import block_bytes_for

MiB = 2**20
SHM = Path("/dev/shm")


class PixelEnv(gym.Env):
    """uint8 frames of ``shape``; episode ``k`` (reset seed) lasts ``length + k % 3`` steps.

    Frames are mostly constant (they compress well, so writing is quick) with the step and the
    seed stamped in, so that every frame differs from its neighbours.
    """

    metadata = {"render_modes": []}

    def __init__(self, shape: tuple[int, ...], length: int) -> None:
        self.observation_space = spaces.Box(0, 255, shape, np.uint8)
        self.action_space = spaces.Discrete(2)
        self.base = (np.arange(int(np.prod(shape))) % 251).astype(np.uint8).reshape(shape)
        self.length, self.t, self.k = length, 0, 0

    def _obs(self) -> np.ndarray:
        frame = self.base.copy()
        frame.flat[:4] = (self.t % 256, self.t // 256, self.k % 256, 7)
        return frame

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.t, self.k = 0, seed or 0
        return self._obs(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self.t += 1
        done = self.t >= self.length + self.k % 3
        return self._obs(), float(action), done and self.k % 2 == 0, done and self.k % 2 == 1, {}


def pixel_dataset(
    dataset_id: str, episodes: int, length: int, shape: tuple[int, ...] = (64, 64, 3)
) -> str:
    env = DataCollector(PixelEnv(shape, length))
    for k in range(episodes):
        env.reset(seed=k)
        while True:
            _, _, term, trunc, _ = env.step(k % 2)
            if term or trunc:
                break
    env.create_dataset(dataset_id)
    env.close()
    return dataset_id


def batches(ds: Dataset, workers: int, **kw: Any) -> list[list[np.ndarray]]:
    out = []
    for b in ds.pipeline(num_workers=workers).batch_iter(**kw):
        out.append([b[0], b[1], b[2], b[3], b[4], b.truncated, b.mask, *b.metadata.values()])
    return out


def segments() -> set[str]:
    """This process's shared memory segments (names made by ``curation.readahead``)."""
    return {p.name for p in SHM.glob(f"hv{os.getpid()}_*")}


# --------------------------------------------------------------------------------------------
# 1. blocks in bytes, one budget


def test_blocks_are_capped_in_bytes_and_hold_whole_episodes() -> None:
    ds = load_dataset(pixel_dataset("px/blocks-v0", 12, 40), max_memory=8 * MiB)
    s = ds.snapshot
    cap = block_bytes_for(8 * MiB)
    assert cap == MiB
    assert s.num_blocks > 1
    for b in range(s.num_blocks):
        eps = np.flatnonzero(s.block == b)
        assert len(eps) == 1 or s.block_nbytes[b] <= cap
        # whole episodes, contiguous in their shard: the block's rows are exactly theirs
        ref = s.block_ref(b)
        assert ref.steps[1] - ref.steps[0] == s.length[eps].sum()
        assert ref.obs[1] - ref.obs[0] == (s.length[eps] + 1).sum()
    # the estimate is what a block really takes, decompressed
    assert ds.read_block(0).nbytes == s.block_nbytes[0]
    # reading back is unchanged by the geometry
    big = load_dataset("px/blocks-v0", max_memory=1024 * MiB)
    assert big.snapshot.num_blocks < s.num_blocks
    for a, b in zip(ds, big, strict=True):
        assert np.array_equal(a.observations, b.observations)
        assert np.array_equal(a.rewards, b.rewards)


def test_iterate_and_sample_stay_within_the_cache_half_of_the_budget() -> None:
    ds = load_dataset(pixel_dataset("px/iter-v0", 12, 40), max_memory=4 * MiB)
    assert ds.block_cache.budget == 2 * MiB
    peak = 0
    for _ in ds.iterate_episodes():
        peak = max(peak, ds.block_cache.nbytes)
    ds.set_seed(0)
    for _ in ds.sample_episodes(6):
        peak = max(peak, ds.block_cache.nbytes)
    assert 0 < peak <= 2 * MiB


def test_an_episode_larger_than_the_budget_reads_alone_with_a_warning() -> None:
    ds_id = pixel_dataset("px/huge-v0", 4, 100)  # ~1.2 MiB an episode
    ds = load_dataset(ds_id, max_memory=MiB)
    assert ds.snapshot.num_blocks == 4  # one episode a block
    ref = load_dataset(ds_id)
    with pytest.warns(HarvestWarning, match="more than the memory budget"):
        ep = ds[1]
    assert np.array_equal(ep.observations, ref[1].observations)
    with pytest.warns(HarvestWarning, match="raise max_memory"):
        got = next(ds.pipeline(num_workers=0).batch_iter(4, 2, seed=0))
    assert got[0].shape == (4, 2, 64, 64, 3)


MEMORY_SCRIPT = """
import json, sys
from curation import load_dataset

def peak_rss():  # VmHWM: ru_maxrss would count the parent's peak from before the exec
    status = open("/proc/self/status").read().split("VmHWM:")[1]
    return int(status.split()[0]) * 1024

ds = load_dataset(sys.argv[1], max_memory=int(sys.argv[2]))
pipe = ds.pipeline(num_workers=int(sys.argv[3]))
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets VmHWM to the current RSS
base = peak_rss()
n = 0
for batch in pipe.batch_iter(32, 4, num_epochs=1, seed=0):
    n += 1
print(json.dumps({"base": base, "peak": peak_rss(), "batches": n}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("workers", [0, 2])
def test_batch_iter_memory_stays_within_a_small_budget(workers: int, datasets_root: Path) -> None:
    """~330 MB of raw 210x160x3 frames read with a 64 MiB budget, in a fresh process.

    Before blocks were sized in bytes, the whole dataset was one 65,536-row block, and the
    consumer held several copies of it (over 1 GiB here).
    """
    ds_id = pixel_dataset("px/raw-v0", 30, 100, shape=(210, 160, 3))
    budget = 64 * MiB
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(MEMORY_SCRIPT), ds_id, str(budget), str(workers)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HARVEST_DATASETS": str(datasets_root)},
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["batches"] >= 20
    grown = got["peak"] - got["base"]
    # on top of the budget: the batches themselves (obs and next_obs, 13 MB each), the one
    # the loop holds and the one being built, and allocator slack
    batches = 2 * 2 * 32 * 4 * 210 * 160 * 3
    assert grown <= budget + batches + 16 * MiB, f"grew {grown / MiB:.0f} MiB"
    assert got["peak"] <= budget + 150 * MiB, f"peak RSS {got['peak'] / MiB:.0f} MiB"


# --------------------------------------------------------------------------------------------
# 2. the same batches whatever the workers and the budget


def test_same_batches_whatever_num_workers_and_budget() -> None:
    """Budgets of 256 MiB and more make the same blocks: their batches are byte-equal."""
    ds_id = pixel_dataset("px/same-v0", 20, 30)
    kw = {"batch_size": 8, "seq_len": 4, "num_epochs": 2, "seed": 5, "include_metadata": True}
    ref = batches(load_dataset(ds_id, max_memory=256 * MiB, block_rows=100), 0, **kw)
    assert len(ref) > 10
    for budget, workers in [(256 * MiB, 2), (4096 * MiB, 0), (4096 * MiB, 2)]:
        ds = load_dataset(ds_id, max_memory=budget, block_rows=100)
        got = batches(ds, workers, **kw)
        assert len(got) == len(ref)
        for a, b in zip(ref, got, strict=True):
            assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    # a budget small enough to cut blocks in bytes: still the same for any num_workers
    small = load_dataset(ds_id, max_memory=2 * MiB)
    assert small.snapshot.num_blocks > 4
    a, b = batches(small, 0, **kw), batches(small, 2, **kw)
    assert len(a) == len(b) > 10
    for x, y in zip(a, b, strict=True):
        assert all(np.array_equal(p, q) for p, q in zip(x, y, strict=True))


# --------------------------------------------------------------------------------------------
# 3. shared memory never leaks


needs_shm = pytest.mark.skipif(not SHM.is_dir(), reason="no /dev/shm to inspect")


@needs_shm
def test_no_segment_left_after_the_end_or_an_early_break() -> None:
    ds = load_dataset(pixel_dataset("px/shm-v0", 12, 40), max_memory=8 * MiB)
    pipe = ds.pipeline(num_workers=2)
    n = sum(1 for _ in pipe.batch_iter(8, 2, num_epochs=1, seed=0))
    assert n > 0 and segments() == set()
    it = pipe.batch_iter(8, 2, seed=0)
    list(islice(it, 3))
    it.close()
    assert segments() == set()
    for i, _ in enumerate(pipe.sarsd_iter(seed=0, max_sequence_len=8)):
        if i == 5:
            break
    time.sleep(0.1)  # the abandoned generator is finalized when the loop drops it
    assert segments() == set()


@needs_shm
def test_no_segment_left_after_a_worker_is_killed() -> None:
    ds = load_dataset(pixel_dataset("px/kill-v0", 12, 40), max_memory=8 * MiB)
    before = set()
    it = ds.pipeline(num_workers=2).batch_iter(8, 2, seed=0)
    try:
        next(it)
        import multiprocessing as mp

        pids = [p.pid for p in mp.active_children() if p.name.startswith("harvest-reader")]
        assert len(pids) == 2
        os.kill(pids[0], signal.SIGKILL)
        with pytest.raises(ReaderError, match=str(pids[0])):
            deadline = time.monotonic() + 20
            for _ in it:
                assert time.monotonic() < deadline, "a dead reader was never reported"
    finally:
        it.close()
    assert segments() == before


@needs_shm
def test_workers_decode_into_a_few_reused_segments_not_one_per_block() -> None:
    """A fresh segment per block cost the workers and the consumer ~100 ms of kernel time per
    32 MiB block (new pages faulted twice, then freed): more than decoding it, so that
    ``num_workers=2`` was slower than 0. Blocks now go into slabs reused block after block."""
    ds = load_dataset(pixel_dataset("px/slabs-v0", 12, 40), max_memory=8 * MiB)
    seen: set[str] = set()
    n = 0
    for _ in ds.pipeline(num_workers=2).batch_iter(8, 2, num_epochs=4, seed=0):
        seen |= segments()
        n += 1
    blocks = 4 * ds.snapshot.num_blocks
    assert blocks >= 20 and n > blocks
    # read-ahead (2 * num_workers blocks), the window (2 blocks), one being released
    assert 0 < len(seen) <= 7, sorted(seen)
    assert segments() == set()


VIEWS_SCRIPT = """
import os, sys
from pathlib import Path
import numpy as np
from curation import load_dataset
from curation.readahead import BlockStream

ds = load_dataset(sys.argv[1], max_memory=8 * 2**20)
snap = ds.snapshot
blocks = list(range(snap.num_blocks))
stream = BlockStream(
    blocks * 3,
    refs=[snap.block_ref(b) for b in blocks],
    nbytes=snap.block_nbytes,
    read=ds.read_block,
    num_workers=2,
    mp_context="fork",
    max_in_flight=4,
    max_bytes=2 * 2**20,
)
kept = []
for held in stream:
    kept.append((held.block, held.rows.observations[""][1:4]))  # a view, kept past release
    held.release()
for block, view in kept:
    assert np.array_equal(view, ds.read_block(block).observations[""][1:4]), block
assert not list(Path("/dev/shm").glob(f"hv{os.getpid()}_*"))  # unlinked, views or not
print("ok", len(kept))
"""


@needs_shm
def test_a_view_kept_past_release_is_never_overwritten_nor_unmapped(datasets_root: Path) -> None:
    """Its slab is retired instead of reused; before slabs, ``SharedMemory.close`` unmapped the
    segment under the view (it does not see numpy's views), and reading it crashed."""
    ds_id = pixel_dataset("px/views-v0", 12, 40)
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(VIEWS_SCRIPT), ds_id],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HARVEST_DATASETS": str(datasets_root)},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    blocks = load_dataset(ds_id, max_memory=8 * MiB).snapshot.num_blocks
    assert out.stdout.split() == ["ok", str(3 * blocks)]


def test_the_consumer_decodes_blocks_itself_while_every_worker_is_busy() -> None:
    """A spawned worker takes a second or so to start: the consumer does not wait for it
    (it used to sit idle while slow or busy workers decoded), and the stream is the same."""
    ds = load_dataset(pixel_dataset("px/steal-v0", 12, 40), max_memory=8 * MiB)
    snap = ds.snapshot
    blocks = list(range(snap.num_blocks)) * 2
    stream = BlockStream(
        blocks,
        refs=[snap.block_ref(b) for b in range(snap.num_blocks)],
        nbytes=snap.block_nbytes,
        read=ds.read_block,
        num_workers=1,
        mp_context="spawn",
        max_in_flight=4,
        max_bytes=4 * MiB,
    )
    got = []
    for held in stream:
        assert held.rows is not None
        got.append(held.block)
        expected = ds.read_block(held.block)
        assert np.array_equal(held.rows.observations[""], expected.observations[""])
        assert np.array_equal(held.rows.rewards, expected.rewards)
        held.release()
    assert got == blocks
    assert stream.decoded_here > 0


# --------------------------------------------------------------------------------------------
# 4. frame stacking


def stacked(frames: np.ndarray, t: int, k: int) -> np.ndarray:
    """The last ``k`` frames up to ``t``, the first frame repeated before the start."""
    return np.stack([frames[max(t - (k - 1 - j), 0)] for j in range(k)])


@pytest.mark.parametrize("workers", [0, 2])
def test_frame_stack_matches_a_reference_from_iterate_episodes(workers: int) -> None:
    ds = load_dataset(pixel_dataset("px/stack-v0", 8, 6, shape=(6, 5, 3)), max_memory=MiB)
    eps = {ep.id: ep for ep in ds.iterate_episodes()}
    k, L = 4, 3
    pipe = ds.pipeline(num_workers=workers)
    seen = 0
    for b in pipe.batch_iter(16, L, num_epochs=1, seed=2, include_metadata=True, frame_stack=k):
        obs, _, _, nxt, _ = b
        assert obs.shape == (16, L, k, 6, 5, 3) and nxt.shape == obs.shape
        for i, (eid, t0) in enumerate(
            zip(b.metadata["episode_id"], b.metadata["step"], strict=True)
        ):
            frames = eps[int(eid)].observations
            for s in range(L):
                if not b.mask[i, s]:
                    assert not obs[i, s].any() and not nxt[i, s].any()
                    continue
                assert np.array_equal(obs[i, s], stacked(frames, t0 + s, k))
                assert np.array_equal(nxt[i, s], stacked(frames, t0 + s + 1, k))
                seen += 1
    assert seen > 0
    for o, _, _, n, _, meta in pipe.sarsd_iter(
        num_epochs=1, max_sequence_len=4, seed=1, include_metadata=True, frame_stack=k
    ):
        frames = eps[meta["id"]].observations
        assert o.shape == (len(meta["terminated"]), k, 6, 5, 3)
        for r in range(len(o)):
            assert np.array_equal(o[r], stacked(frames, meta["start"] + r, k))
            assert np.array_equal(n[r], stacked(frames, meta["start"] + r + 1, k))


def test_frame_stack_one_is_the_plain_batch() -> None:
    ds = load_dataset(pixel_dataset("px/stack1-v0", 6, 10, shape=(4, 4, 1)))
    pipe = ds.pipeline(num_workers=0)
    a = next(pipe.batch_iter(8, 2, seed=3))
    b = next(pipe.batch_iter(8, 2, seed=3, frame_stack=1))
    c = next(pipe.batch_iter(8, 2, seed=3, frame_stack=2))
    assert np.array_equal(a[0], b[0])
    assert np.array_equal(c[0][:, :, -1], a[0]) and np.array_equal(c[3][:, :, -1], a[3])


def test_frame_stack_is_gymnasiums_frame_stack_observation_with_reset_padding() -> None:
    """The stacks match ``FrameStackObservation(padding_type="reset")`` replaying the episode."""
    ds = load_dataset(pixel_dataset("px/gym-v0", 3, 5, shape=(3, 2, 1)))
    k = 3
    for ep in ds.iterate_episodes():
        env = gym.wrappers.FrameStackObservation(PixelEnv((3, 2, 1), 5), k, padding_type="reset")
        want = [env.reset(seed=ep.seed)[0]]
        for a in ep.actions:
            want.append(env.step(int(a))[0])
        pipe = ds.view(np.array([ep.id])).pipeline(num_workers=0)
        got = [seg for seg in pipe.sarsd_iter(num_epochs=1, max_sequence_len=100, frame_stack=k)]
        assert len(got) == 1
        obs, _, _, nxt, _ = got[0]
        assert np.array_equal(obs, np.stack(want[:-1]))
        assert np.array_equal(nxt, np.stack(want[1:]))


def test_torch_batch_iterable_stacks_frames_within_the_budget() -> None:
    torch = pytest.importorskip("torch")
    from curation.torch import BatchIterable

    ds = load_dataset(pixel_dataset("px/torch-v0", 6, 20, shape=(8, 8, 3)), max_memory=MiB)
    ref = next(ds.pipeline(num_workers=0).batch_iter(4, 2, seed=0, num_epochs=1, frame_stack=3))
    item = next(iter(BatchIterable(ds, 4, seq_len=2, seed=0, frame_stack=3)))
    assert item["observations"].shape == (4, 2, 3, 8, 8, 3)
    assert torch.equal(item["observations"], torch.from_numpy(ref[0]))
    assert ds.block_cache.nbytes <= ds.block_cache.budget
