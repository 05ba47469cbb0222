"""Concurrency (issue 08, item 5): writers exclude each other, readers see whole commits.

Real processes throughout: ``collect`` and ``curate`` command lines started side by side, and
a reader in this process opening and reading every commit a running writer makes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import CLI, collect_cartpole, spawn, wait_for_commit

from collector import storage
from curation.api import load_dataset

CURATE = "import sys; from curation.cli import main; sys.exit(main())"
SLOW = ("env=helpers:harvest-test/Slow-v0", "dataset_id=conc/slow-v0")


@pytest.mark.slow
def test_a_second_collect_on_the_same_id_is_refused_with_the_holders_pid(
    datasets_root: Path,
) -> None:
    runs = datasets_root.parent / "runs"
    args = (*SLOW, "episodes=100000", "checkpoint.every_episodes=5", f"hydra.run.dir={runs}")
    first = spawn(CLI, *args, root=datasets_root)
    try:
        wait_for_commit("conc/slow-v0", timeout=60)
        second = spawn(CLI, *args, root=datasets_root)  # the same command
        _, err = second.communicate(timeout=120)
        assert second.returncode == 1, err
        (line,) = err.strip().splitlines()  # one line, no traceback
        assert f"'conc/slow-v0' is being written by another process (pid {first.pid})" in line
        assert first.poll() is None, "the refused run disturbed the first"
    finally:
        first.kill()
        first.communicate()
    report = storage.verify_dataset("conc/slow-v0")  # the first run's commits are intact
    assert report.ok and report.episodes > 0, report.problems


@pytest.mark.slow
def test_readers_see_only_whole_commits_while_a_writer_commits_and_repacks(
    datasets_root: Path,
) -> None:
    n = 60
    writer = spawn(
        CLI,
        *SLOW,
        f"episodes={n}",
        "checkpoint.every_episodes=1",  # a commit per episode, then a repack at the end
        f"hydra.run.dir={datasets_root.parent / 'runs'}",
        root=datasets_root,
    )
    snapshots, old = [], None
    try:
        wait_for_commit("conc/slow-v0", timeout=60)
        while True:
            finished = writer.poll() is not None
            ds = load_dataset("conc/slow-v0")
            meta = ds.metadata
            episodes = list(ds)  # every step of this snapshot
            assert len(episodes) == meta["total_episodes"]
            assert sum(len(e.rewards) for e in episodes) == meta["total_steps"]
            assert [e.id for e in episodes] == list(range(len(episodes)))  # no holes
            snapshots.append(len(episodes))
            if old is None and len(episodes) >= n // 3:
                old = (ds, [e.observations.copy() for e in episodes])
            if finished:
                break
        assert writer.returncode == 0, writer.communicate()[1]
    finally:
        writer.kill()
        writer.communicate()
    assert snapshots[-1] == n and len(set(snapshots)) >= 5, snapshots
    # a snapshot taken mid-run still reads after the writer repacked its shards away
    assert old is not None
    ds, observations = old
    for e, expected in zip(ds, observations, strict=True):
        np.testing.assert_array_equal(e.observations, expected)


@pytest.mark.slow
def test_two_curate_writes_to_the_same_new_id_one_wins_the_other_says_why(
    datasets_root: Path,
) -> None:
    collect_cartpole("conc/a-v0", 30)
    collect_cartpole("conc/b-v0", 30, seed=1)
    long_ones = sum(len(e.rewards) > 10 for e in load_dataset("conc/a-v0"))
    for round_ in range(3):
        target = f"conc/both-{round_}-v0"
        commands = [
            ("combine", "conc/a-v0", "conc/b-v0", "--into", target),
            ("filter", "conc/a-v0", "--where", "length > 10", "--into", target),
        ]
        procs = [spawn(CURATE, *c, root=datasets_root) for c in commands]
        results = [(p.wait(timeout=120), p.communicate()[1]) for p in procs]
        codes = sorted(code for code, _ in results)
        assert codes == [0, 1], results
        (err,) = [err for code, err in results if code == 1]
        (line,) = err.strip().splitlines()
        assert "is being written by another process (pid" in line or "already exists" in line
        report = storage.verify_dataset(target)
        assert report.ok, report.problems
        winner = commands[[code for code, _ in results].index(0)][0]
        assert report.episodes == (60 if winner == "combine" else long_ones)
