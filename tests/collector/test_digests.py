"""``episode_digests`` against its reference: the plain per-episode loop it replaced.

The digests define every dataset's fingerprint (compared across layouts and with stored
datasets), so the buffer-building implementation in ``collector.storage`` must hash exactly
the bytes the reference below hashes, for any batch a shard can hold.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector import storage


def reference_episode_digests(batch: storage.EpisodeBatch) -> np.ndarray:
    """The original per-episode implementation of ``storage.episode_digests``, kept verbatim."""
    t = batch.table
    out = np.zeros((batch.num_episodes, 32), np.uint8)
    obs_cols = sorted(batch.observations.items())
    act_cols = sorted(batch.actions.items())
    step_cols = [
        ("rewards", batch.rewards),
        ("terminations", batch.terminations),
        ("truncations", batch.truncations),
    ]
    info_cols = [(n, v, batch.info_masks[n]) for n, v in sorted((batch.infos or {}).items())]
    # whole-column byte views sliced per episode: far cheaper than numpy slicing per column
    obs_views, step_views = [], []
    for views, group in ((obs_views, obs_cols), (step_views, [*act_cols, *step_cols])):
        for name, arr in group:
            flat = np.ascontiguousarray(arr)
            header = f"{name}|{arr.dtype.str}|{arr.shape[1:]}".encode()
            row = flat.dtype.itemsize * int(np.prod(flat.shape[1:], dtype=np.int64))
            views.append((header, memoryview(flat.reshape(-1).view(np.uint8)), row))
    lengths = t["length"].tolist()
    obs_off, step_off = t["obs_offset"].tolist(), t["step_offset"].tolist()
    seeds, has_seed, options = t["seed"].tolist(), t["has_seed"].tolist(), t["options"]
    infos_flag = b"infos:" + (b"yes" if batch.infos is not None else b"no")
    sha256 = hashlib.sha256
    for e in range(batch.num_episodes):
        length, o0, s0 = lengths[e], obs_off[e], step_off[e]
        # one update of the joined parts hashes the same bytes as one update per part
        parts = [
            b"harvest-episode-v1seed:",
            str(seeds[e]).encode() if has_seed[e] else b"none",
            b"options:",
            (options[e] or "null").encode(),
        ]
        for header, view, row in obs_views:
            parts += (header, view[o0 * row : (o0 + length + 1) * row])
        for header, view, row in step_views:
            parts += (header, view[s0 * row : (s0 + length) * row])
        parts.append(infos_flag)
        if info_cols:
            obs_rows = slice(o0, o0 + length + 1)
            for name, values, mask in info_cols:
                present = mask[obs_rows]
                if present.any():
                    parts.append(f"info|{name}|{values.shape[1:]}".encode())
                    parts.append(np.ascontiguousarray(present).tobytes())
                    parts.append(storage.digests._canonical_numbers(values[obs_rows][present]))
        h = sha256(b"".join(parts))
        out[e] = np.frombuffer(h.digest(), np.uint8)
    return out


# ------------------------------------------------------------------------------------------
# batches

DTYPES = ["float32", "float64", ">f4", "int8", "uint8", "int32", "int64", "uint64", "bool"]
SHAPES = [(), (1,), (3,), (2, 2), (0,)]
COLUMN_NAMES = ["", "a", "pos", "b/c", "z\\/k"]


def _column(rng: np.random.Generator, rows: int, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """``rows`` random rows, raw bytes of every value (NaNs and odd bools included)."""
    dt = np.dtype(dtype)
    raw = rng.integers(0, 256, rows * int(np.prod(shape, dtype=np.int64)) * dt.itemsize)
    if dt.kind == "b":
        raw %= 2
    return raw.astype(np.uint8).view(dt).reshape(rows, *shape)


@st.composite
def column_specs(draw: st.DrawFn, min_size: int = 1) -> dict[str, tuple[str, tuple[int, ...]]]:
    names = draw(st.lists(st.sampled_from(COLUMN_NAMES), min_size=min_size, max_size=3))
    names = sorted(set(names), key=names.index)  # unsorted order: the digest sorts
    if len(names) > 1 and "" in names:
        names.remove("")  # a root leaf is alone, as in a shard
    return {n: (draw(st.sampled_from(DTYPES)), draw(st.sampled_from(SHAPES))) for n in names}


SEEDS = st.one_of(st.none(), st.integers(0, 2**64 - 1), st.sampled_from([0, 2**63, 2**64 - 1]))
OPTIONS = st.one_of(
    st.none(),
    st.just(""),  # falsy: hashed as null, like None
    st.text(max_size=12).map(lambda s: storage.batch._canonical_json({"k": s})),
)


@st.composite
def batches(draw: st.DrawFn) -> storage.EpisodeBatch:
    """Varied batches: column shapes and dtypes, seeds, options, infos, row layouts."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    lengths = draw(st.lists(st.integers(0, 7), max_size=9))
    n = len(lengths)
    steps = sum(lengths)
    obs_spec, act_spec = draw(column_specs()), draw(column_specs())
    seeds = draw(st.lists(SEEDS, min_size=n, max_size=n))
    options = draw(st.lists(OPTIONS, min_size=n, max_size=n))
    table = storage.make_table(
        np.arange(n) * 3, seeds, lengths, np.zeros(n), [True] * n, [False] * n, [None] * n
    )
    table["options"] = options  # already canonical JSON (or "" / None)
    infos: dict[str, np.ndarray] | None = None
    masks: dict[str, np.ndarray] = {}
    info_mode = draw(st.sampled_from(["none", "empty", "columns"]))
    if info_mode != "none":
        infos = {}
    if info_mode == "columns":
        for name in draw(st.lists(st.sampled_from(["x", "y/z", "big"]), max_size=3, unique=True)):
            dtype = draw(st.sampled_from(["float64", "float32", "int64", "uint64", "int16"]))
            shape = draw(st.sampled_from([(), (2,)]))
            values = _column(rng, steps + n, dtype, shape)
            if dtype.startswith("float") and draw(st.booleans()):
                with np.errstate(invalid="ignore"):  # inf and NaN rows stay non-integral
                    values = np.round(values.astype(np.float64) % 1000).astype(dtype)
            infos[name] = values
            masks[name] = rng.random(steps + n) < draw(st.sampled_from([0.0, 0.5, 1.0]))
    batch = storage.EpisodeBatch(
        observations={k: _column(rng, steps + n, *v) for k, v in obs_spec.items()},
        actions={k: _column(rng, steps, *v) for k, v in act_spec.items()},
        rewards=_column(rng, steps, "float64", ()),
        terminations=_column(rng, steps, "bool", ()),
        truncations=_column(rng, steps, "bool", ()),
        table=table,
        infos=infos,
        info_masks=masks,
    )
    if n and draw(st.booleans()):
        # table rows in another order than the data rows (offsets not increasing)
        order = np.asarray(draw(st.permutations(range(n))))
        table = {
            k: v[order] if isinstance(v, np.ndarray) else [v[i] for i in order]
            for k, v in table.items()
        }
        batch.table = table
    if draw(st.booleans()):
        # non-contiguous column arrays (e.g. a strided view)
        batch.rewards = np.repeat(batch.rewards, 2)[::2]
        batch.observations = {
            k: np.asfortranarray(v) if v.ndim > 1 else v for k, v in batch.observations.items()
        }
    return batch


@settings(max_examples=300, deadline=None, database=None)
@given(batches(), st.sampled_from([1, 2, 3, 1024]), st.sampled_from([1, 100, 4 << 20]))
def test_episode_digests_match_the_reference(
    batch: storage.EpisodeBatch, block: int, block_bytes: int
) -> None:
    d = storage.digests
    saved = d._DIGEST_BLOCK, d._DIGEST_BYTES
    # episodes and bytes per buffer: block boundaries must not matter
    d._DIGEST_BLOCK, d._DIGEST_BYTES = block, block_bytes
    try:
        got = storage.episode_digests(batch)
    finally:
        d._DIGEST_BLOCK, d._DIGEST_BYTES = saved
    want = reference_episode_digests(batch)
    assert got.shape == want.shape == (batch.num_episodes, 32)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, want)


def _cartpole_like(n: int, seed: int = 0) -> storage.EpisodeBatch:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(8, 60, n)
    steps = int(lengths.sum())
    return storage.EpisodeBatch(
        observations={"": rng.normal(size=(steps + n, 4)).astype(np.float32)},
        actions={"": rng.integers(0, 2, steps)},
        rewards=np.ones(steps),
        terminations=rng.random(steps) < 0.05,
        truncations=np.zeros(steps, bool),
        table=storage.make_table(
            np.arange(n),
            [None] * n,
            lengths,
            lengths.astype(float),
            [True] * n,
            [False] * n,
            [None] * n,
        ),
    )


@pytest.mark.parametrize("n", [0, 1, 1023, 1024, 1025, 5000])
def test_episode_digests_match_the_reference_across_blocks(n: int) -> None:
    batch = _cartpole_like(n, seed=n)
    np.testing.assert_array_equal(storage.episode_digests(batch), reference_episode_digests(batch))


def test_every_episode_seeded_and_without_options_is_hashed_as_the_reference() -> None:
    # collect's case (a seed per episode, no options) has a fast path of its own
    batch = _cartpole_like(6)
    seeds = [0, 1, 2**63 - 1, 2**63, 2**64 - 1, 12345678901234567]
    batch.table = storage.make_table(
        np.arange(6), seeds, batch.table["length"], batch.table["return"],
        [True] * 6, [False] * 6, [None] * 6,
    )  # fmt: skip
    np.testing.assert_array_equal(storage.episode_digests(batch), reference_episode_digests(batch))


def test_episode_digests_known_value() -> None:
    # pins the message format itself, independently of both implementations
    batch = _cartpole_like(1)
    t = batch.table
    length = int(t["length"][0])
    message = b"".join(
        [
            b"harvest-episode-v1seed:noneoptions:null",
            b"|<f4|(4,)",
            batch.observations[""][: length + 1].tobytes(),
            b"|<i8|()",
            batch.actions[""].tobytes(),
            b"rewards|<f8|()",
            batch.rewards.tobytes(),
            b"terminations||b1|()",
            batch.terminations.tobytes(),
            b"truncations||b1|()",
            batch.truncations.tobytes(),
            b"infos:no",
        ]
    )
    assert storage.episode_digests(batch)[0].tobytes() == hashlib.sha256(message).digest()


def test_episode_digests_are_writable() -> None:
    # callers (and tests) edit digests in place, e.g. to fake a corrupt table
    digests: Any = storage.episode_digests(_cartpole_like(3))
    digests[1] ^= 1


def test_a_signaling_nan_info_is_hashed_without_a_warning() -> None:
    # widening a float32 signaling NaN raises numpy's "invalid value" warning (an error here)
    snan = np.array([0x7FA00000, 0], np.uint32).view(np.float32)
    got = storage.digests._canonical_numbers(snan)
    with np.errstate(invalid="ignore"):
        assert got == b"f" + snan.astype(np.float64).tobytes()


def test_the_fingerprint_is_the_same_for_ids_in_any_order() -> None:
    from collector.storage.digests import fingerprint, is_increasing

    rng = np.random.default_rng(0)
    ids = np.arange(1000, dtype=np.int64) * 3
    digests = rng.integers(0, 256, (1000, 32), dtype=np.uint8)
    shuffle = rng.permutation(1000)
    assert is_increasing(ids) and not is_increasing(ids[shuffle])
    assert not is_increasing(np.array([1, 1]))  # a duplicate is not increasing
    assert fingerprint(ids, digests) == fingerprint(ids[shuffle], digests[shuffle])


def test_a_large_episode_is_hashed_without_a_copy_of_its_frames() -> None:
    # a Pong episode is ~90 MB of frames: laying it out in a message buffer first costs a
    # page fault per 4 kB of fresh memory (issue 19), more than hashing it
    import tracemalloc

    rng = np.random.default_rng(0)
    length = 60
    frames = rng.integers(0, 256, (length + 1, 210, 160, 3), dtype=np.uint8)
    batch = storage.EpisodeBatch(
        observations={"": frames},
        actions={"": rng.integers(0, 6, length)},
        rewards=rng.normal(size=length),
        terminations=np.zeros(length, bool),
        truncations=np.arange(length) == length - 1,
        table=storage.make_table([0], [7], [length], [0.0], [False], [True], [None]),
    )
    tracemalloc.start()
    try:
        got = storage.episode_digests(batch)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(got, reference_episode_digests(batch))
    assert peak < frames.nbytes // 4, peak
