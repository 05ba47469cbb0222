"""Encoding off the recording core (issue 19 item 2): same data, nothing lost when it dies."""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import pickle
import signal
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from encoder_support import config, encoder_children, frames_config
from helpers import committed_episodes, spawn

from collector import encoder as encoder_module
from collector import shared, storage
from collector.collect import collect
from collector.encoder import Encoder, encode_inline
from collector.recorder import EpisodeRecorder

pytestmark = pytest.mark.skipif(not Encoder.available(), reason="needs Linux memfd")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def pixel_batch(episodes: int, steps: int, seed: int) -> storage.EpisodeBatch:
    """Finished episodes of 32x32x3 uint8 frames and Box actions, with infos."""
    obs_space = gym.spaces.Box(0, 255, (32, 32, 3), np.uint8)
    act_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    rng = np.random.default_rng(seed)
    rec = EpisodeRecorder(obs_space, act_space, True)
    for ep in range(episodes):
        first = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
        rec.begin_episode(ep, ep, None, first, {"k": np.float64(ep)})
        for t in range(steps):
            frame = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            action = rng.uniform(-1, 1, 2).astype(np.float32)
            rec.add_step(action, frame, float(t), False, t == steps - 1, {"k": np.float64(t)})
        rec.end_episode()
    batch = rec.take()
    assert batch is not None
    return batch


def test_the_child_builds_the_same_shard_as_this_process() -> None:
    with Encoder("process") as encoder:
        for seed in (0, 1):  # the child serves window after window
            image, table, schema = encoder.encode(pixel_batch(3, 40, seed), "lzf")
            ref_image, ref_table, ref_schema = encode_inline(pixel_batch(3, 40, seed), "lzf")
            assert np.array_equal(table["digest"], ref_table["digest"])
            assert schema == ref_schema
            assert image == ref_image
        assert encoder.encoded_in_child == 2 and encoder.pid is not None
        pid = encoder.pid
    assert not alive(pid)


def test_collect_with_the_encoder_process_stores_what_inline_stores(
    datasets_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inline = collect(config("enc/inline-v0", "inline"))
    with caplog.at_level(logging.DEBUG, logger="collector.encoder"):
        child = collect(config("enc/child-v0", "process"))
    assert "started the encoder process" in caplog.text
    assert child.fingerprint == inline.fingerprint
    assert child.total_steps == inline.total_steps
    assert storage.verify_dataset("enc/child-v0").ok
    assert not encoder_children(os.getpid())  # stopped with the run


@pytest.mark.parametrize("make_config", [config, frames_config], ids=["cartpole", "frames"])
def test_killing_the_encoder_process_loses_nothing(
    make_config: Any, datasets_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from encoder_support import KillsTheEncoder

    KillsTheEncoder.killed.clear()  # once per run of the policy class
    reference = collect(make_config("enc/ref-v0", "inline"))
    with caplog.at_level(logging.WARNING, logger="collector.encoder"):
        result = collect(make_config("enc/killed-v0", "process", "KillsTheEncoder"))
    assert "encoder process stopped" in caplog.text
    assert result.fingerprint == reference.fingerprint
    assert result.total_episodes == 12 and storage.verify_dataset("enc/killed-v0").ok


def test_the_child_writes_the_shard_file_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the image no longer comes back through the pipe to be written and hashed beside the
    # recording thread (issue 19): the child writes the file, this process only installs it
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the recording process wrote a shard file")

    monkeypatch.setattr(storage.durable, "write_new_file", refuse)  # in this process only
    ref_image, ref_table, ref_schema = encode_inline(pixel_batch(3, 40, 0), "lzf")
    with Encoder("process") as encoder:
        sha, table, schema = encoder.encode_to(pixel_batch(3, 40, 0), "lzf", tmp_path / "a.tmp")
        assert encoder.encoded_in_child == 1
    assert (tmp_path / "a.tmp").read_bytes() == ref_image
    assert sha == hashlib.sha256(ref_image).hexdigest()
    assert np.array_equal(table["digest"], ref_table["digest"]) and schema == ref_schema


def test_a_shard_file_the_child_cannot_write_is_written_here_or_refused_here(
    tmp_path: Path,
) -> None:
    # the child reports the error and this process encodes the window itself: a full disk
    # or a missing folder is raised here, as the committer maps it, and no file is left
    with Encoder("process") as encoder:
        with pytest.raises(FileNotFoundError):
            encoder.encode_to(pixel_batch(2, 10, 0), "lzf", tmp_path / "gone" / "a.tmp")
        assert encoder.encoded_in_child == 0
        sha, _, _ = encoder.encode_to(pixel_batch(2, 10, 0), "lzf", tmp_path / "b.tmp")
        assert encoder.encoded_in_child == 1  # the child lives on
    assert sha == hashlib.sha256((tmp_path / "b.tmp").read_bytes()).hexdigest()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.tmp"]


def test_an_interrupted_encode_to_stops_the_child_and_leaves_no_file(tmp_path: Path) -> None:
    # CI found it: a second Ctrl-C while the run's last window was in the child left the
    # child to finish its temp shard after the run had cleaned up (and a reply nobody read)
    import threading

    _, batch = frame_batch(2, 400)  # ~22 MB of frames: gzip:9 keeps the child busy
    path = tmp_path / "window.tmp"
    with Encoder("process") as encoder:
        encoder.encode_to(pixel_batch(1, 2, 0), "lzf", tmp_path / "warm.tmp")  # child ready
        pid = encoder.pid
        assert pid is not None
        ctrl_c = threading.Timer(0.05, signal.pthread_kill, (threading.get_ident(), signal.SIGINT))
        ctrl_c.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                encoder.encode_to(batch, "gzip:9", path)
        finally:
            ctrl_c.cancel()
        assert not alive(pid)  # stopped, not left to finish the window
        time.sleep(0.5)
        assert not path.exists()
        sha, _, _ = encoder.encode_to(pixel_batch(1, 2, 0), "lzf", tmp_path / "after.tmp")
    assert sha == hashlib.sha256((tmp_path / "after.tmp").read_bytes()).hexdigest()


SLOW_RUN = """
import os, sys
os.environ["ENCODER_TEST_SLOW"] = "1"
from collector.collect import collect
from encoder_support import config
collect({**config(sys.argv[1], "process", "Slow"), "episodes": 60})
"""


@pytest.mark.slow
def test_kill_9_of_the_recorder_ends_the_encoder_and_the_run_resumes_exactly(
    datasets_root: Path,
) -> None:
    proc = spawn(SLOW_RUN, "enc/resumed-v0", root=datasets_root)
    try:
        deadline = time.monotonic() + 60
        children: list[int] = []
        while time.monotonic() < deadline and not children:
            assert proc.poll() is None, proc.communicate()
            children = encoder_children(proc.pid)
            time.sleep(0.05)
        assert children, "the encoder process never started"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not committed_episodes("enc/resumed-v0"):
            time.sleep(0.05)  # a commit or two
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(alive(c) for c in children):
        time.sleep(0.05)
    assert not any(alive(c) for c in children), "the encoder outlived its recorder"
    assert 0 < (committed_episodes("enc/resumed-v0") or 0) < 60  # killed mid-run, after commits
    resumed = collect({**config("enc/resumed-v0", "process", "Slow"), "episodes": 60})
    reference = collect({**config("enc/whole-v0", "inline"), "episodes": 60})
    assert resumed.fingerprint == reference.fingerprint


def window_files(pid: int) -> dict[int, int]:
    """The window memory files process ``pid`` holds open or mapped: inode -> bytes."""
    found = {}
    for link in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(link)
        except OSError:
            continue
        if target.startswith("/memfd:harvest-window"):
            st = os.stat(link)
            found[st.st_ino] = st.st_size
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        if "/memfd:harvest-window" in line:
            found.setdefault(int(line.split()[4]), -1)
    return found


def test_one_window_file_is_reused_and_bounded_by_the_largest_window() -> None:
    # a fresh memory file per window costs a page fault per 4 kB written, in the recording
    # process (issue 19: ~0.4 s of a 2,800-frame Pong run); one file, reused, is warm
    big, small = pixel_batch(3, 60, 0), pixel_batch(2, 20, 1)
    with Encoder("process") as encoder:
        encoder.encode(big, "lzf")
        first = window_files(os.getpid())
        assert len(first) == 1
        (size,) = first.values()
        assert big.nbytes <= size <= big.nbytes + (1 << 20)
        for batch in (small, big, small):
            image, table, _ = encoder.encode(batch, "lzf")
            ref_image, ref_table, _ = encode_inline(batch, "lzf")
            assert image == ref_image and np.array_equal(table["digest"], ref_table["digest"])
        assert window_files(os.getpid()) == first  # the same file, no larger
        assert len(window_files(encoder.pid)) <= 1  # the child maps it once, too
        assert encoder.encoded_in_child == 4
    assert not window_files(os.getpid())  # freed with the encoder


def frame_batch(episodes: int, steps: int) -> tuple[EpisodeRecorder, storage.EpisodeBatch]:
    """Finished episodes of 96x96x3 frames: the recorder's observation array is shared."""
    obs_space = gym.spaces.Box(0, 255, (96, 96, 3), np.uint8)
    rec = EpisodeRecorder(obs_space, gym.spaces.Discrete(4))
    rng = np.random.default_rng(episodes)
    for ep in range(episodes):
        rec.begin_episode(ep, ep, None, rng.integers(0, 256, (96, 96, 3), np.uint8), {})
        for t in range(steps):
            frame = rng.integers(0, 256, (96, 96, 3), np.uint8)
            rec.add_step(t % 4, frame, 1.0, False, t == steps - 1, {})
        rec.end_episode()
    batch = rec.take()
    assert batch is not None
    return rec, batch


def frame_files(pid: int) -> int:
    """Recorder memory files process ``pid`` holds open or mapped."""
    fds = [os.readlink(p) for p in Path(f"/proc/{pid}/fd").iterdir() if p.exists()]
    maps = Path(f"/proc/{pid}/maps").read_text()
    return sum("/memfd:harvest-frames" in t for t in fds) + maps.count("/memfd:harvest-frames")


def test_recorded_frames_reach_the_child_without_a_copy() -> None:
    # a commit window of frames copied into the window file doubled the memory a run
    # touches (issue 19); the recorder's own shared array is passed instead
    rec, batch = frame_batch(2, 150)
    assert shared.locate(pickle.PickleBuffer(batch.observations[""]).raw()) is not None
    expected = encode_inline(frame_batch(2, 150)[1], "lzf")
    with Encoder("process") as encoder:
        image, table, schema = encoder.encode(batch, "lzf")
        assert encoder.encoded_in_child == 1
        assert image == expected[0] and np.array_equal(table["digest"], expected[1]["digest"])
        (window,) = window_files(os.getpid()).values()
        assert window < batch.observations[""].nbytes // 10  # only the small columns
        assert frame_files(encoder.pid) == 0  # the child unmapped the recorder's file
    del rec, batch
    gc.collect()
    assert shared.wait_closed()  # closed by a helper thread: ~20 ms a 100 MB window
    assert frame_files(os.getpid()) == 0  # freed with the arrays


def test_the_encoder_process_imports_only_what_encoding_needs() -> None:
    # `collector`'s __init__ imports the whole tool (gymnasium, omegaconf, Hydra's config):
    # ~0.35 s of CPU the child spent before its first window, which until then is encoded
    # on the recording side (issue 19)
    import subprocess
    import sys

    from collector import encoder

    probe = "; import sys; print(sorted(m for m in ('gymnasium', 'omegaconf') if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", encoder.CHILD_IMPORTS + probe, "-1", encoder.PACKAGE_DIR],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.strip() == "[]"
    with Encoder("process") as enc:  # and the child still encodes
        image, _, _ = enc.encode(pixel_batch(2, 10, 0), "lzf")
        assert enc.encoded_in_child == 1
        assert image == encode_inline(pixel_batch(2, 10, 0), "lzf")[0]


def test_a_run_that_ends_before_the_child_is_ready_prints_nothing(
    capfd: pytest.CaptureFixture[str],
) -> None:
    # a short run stops the child it started while the child still imports: its "ready"
    # then met a closed socket and printed a BrokenPipeError traceback on the run's stderr
    for _ in range(3):
        encoder = Encoder("process")
        encoder.prepare(encoder_module.MIN_WINDOW_BYTES)
        pid = encoder.pid
        encoder.close()
        assert pid is not None and not alive(pid)
    assert capfd.readouterr().err == ""


def test_the_encoder_process_runs_one_thread() -> None:
    # numpy's import starts a BLAS thread pool (one thread a core) that the child never uses:
    # starting it cost ~0.1 s of CPU, on the core the recording thread shares (issue 19)
    with Encoder("process") as enc:
        enc.encode(pixel_batch(2, 10, 0), "lzf")
        assert enc.encoded_in_child == 1
        assert enc.pid is not None
        status = Path(f"/proc/{enc.pid}/status").read_text()
    threads = int(next(line for line in status.splitlines() if line.startswith("Threads:"))[8:])
    assert threads == 1


def test_a_window_hashed_beside_its_compression_is_the_same_bit_for_bit() -> None:
    # the run's last window is hashed in a second thread while its columns compress
    # (~0.05 s instead of ~0.08 s a raw Pong episode, issue 19): the same image and digests
    expected = encode_inline(frame_batch(2, 150)[1], "auto")
    _, batch = frame_batch(2, 150)
    assert batch.nbytes >= encoder_module.MIN_WINDOW_BYTES  # large enough to overlap
    assert "digest" not in batch.table
    image, table, schema = encode_inline(batch, "auto", overlap=True)
    assert image == expected[0] and np.array_equal(table["digest"], expected[1]["digest"])
    with Encoder("process") as encoder:
        image, table, _ = encoder.encode(frame_batch(2, 150)[1], "auto", overlap=True)
        assert encoder.encoded_in_child == 1
    assert image == expected[0] and np.array_equal(table["digest"], expected[1]["digest"])
