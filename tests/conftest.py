"""Shared fixtures: every test gets its own datasets root (as Minari's suite does)."""

from __future__ import annotations

import os

# huggingface_hub reads these once, at import: no Xet (the local Hub speaks the classic LFS
# protocol, research/remotes-testing.md section 3.3) and no telemetry.
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import logging  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# The suite's fuzz tests draw the same examples on every run (each test's own seed, from its
# name), so a CI failure repeats on the next run and in a clone: with fresh draws, one run
# failed where the next passed. HARVEST_HYPOTHESIS=explore draws new examples each run.
settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HARVEST_HYPOTHESIS", "repeatable"))


@pytest.fixture(scope="session")
def ppo_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny PPO trained on CartPole-v1 once per session (~10 s on one CPU), as a model.zip."""
    pytest.importorskip("stable_baselines3")
    from sb3_models import train_ppo_cartpole

    return train_ppo_cartpole(tmp_path_factory.mktemp("sb3") / "ppo.zip")


@pytest.fixture(autouse=True)
def datasets_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point ``$HARVEST_DATASETS`` (and Minari's root) at fresh temp folders for every test."""
    root = tmp_path / "datasets"
    monkeypatch.setenv("HARVEST_DATASETS", str(root))
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))  # never ~/.minari
    monkeypatch.delenv("HARVEST_REMOTE", raising=False)  # a developer's own remote stays out
    return root


@pytest.fixture(autouse=True)
def _close_log_handlers_added_by_the_test() -> Iterator[None]:
    """Close the root logger's handlers a test added (an in-process Hydra run adds a file one).

    Left open, a later Hydra run drops them and the garbage collector's ResourceWarning fails
    whichever test happens to be running then.
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)
