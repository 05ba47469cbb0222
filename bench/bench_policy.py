"""Benchmark collection from a torch policy: batched inference against a plain loop.

Workload (issue 20): a 2x64 tanh MLP (``Mlp`` below, seeded random weights, saved as a
state_dict) run by ``policy=torch`` (``TorchPolicy``, CPU, deterministic) on CartPole-v1
(argmax of 2 logits) and HalfCheetah-v5 (6 action means clipped to the bounds; episodes cut
at ``--cheetah-steps``), for ``num_envs`` 1, 8 and 64 (sync vector envs beyond 1).

Measured side by side in one process, interleaved (plain, collect, plain, collect, ...),
median of ``--repeats``:

* the plain loop: the same ``TorchPolicy`` object and the same batched forward pass
  (``act`` for one env, ``act_rows(obs, n)`` for ``n``) on ``gym.make``/``gym.make_vec(...,
  "sync")``, nothing recorded, for as many steps as collect recorded;
* ``collect(cfg)`` with ``policy=torch policy.module=... policy.state_dict=...``: recorded
  steps/s over the whole call (env and policy creation, recording, digests, commits).

Both report the share of their wall time spent inside the policy's forward pass and action
choice (``TorchPolicy._actions``, timed by wrapping it).

Run: ``PYTHONPATH=. python bench/bench_policy.py`` (about 2 min on 2 cores) or ``--quick``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

import torch
from _common import verdict

SEED = 0
WIDTHS = (1, 8, 64)


class Mlp(torch.nn.Module):
    """obs -> 64 -> 64 -> logits or action means (tanh), the usual small control policy."""

    def __init__(self, observation_space: Any, action_space: Any) -> None:
        super().__init__()
        n_in = int(observation_space.shape[0])
        n_out = int(action_space.n) if hasattr(action_space, "n") else int(action_space.shape[0])
        self.body = torch.nn.Sequential(
            torch.nn.Linear(n_in, 64),
            torch.nn.Tanh(),
            torch.nn.Linear(64, 64),
            torch.nn.Tanh(),
            torch.nn.Linear(64, n_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.body(x)


class InferenceClock:
    """Seconds spent in ``TorchPolicy._actions`` while installed (class-level wrapper)."""

    def __init__(self) -> None:
        from collector.policy_loaders import TorchPolicy

        self.cls = TorchPolicy
        self.saved = TorchPolicy._actions
        self.seconds = 0.0

    def __enter__(self) -> InferenceClock:
        saved = self.saved

        @functools.wraps(saved)
        def timed(policy: Any, *a: Any, **k: Any) -> Any:
            start = time.perf_counter()
            try:
                return saved(policy, *a, **k)
            finally:
                self.seconds += time.perf_counter() - start

        self.cls._actions = timed  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        self.cls._actions = self.saved  # type: ignore[method-assign]


def unbatched_class() -> type:
    """``TorchPolicy`` without ``reset_row``/``act_rows``: one instance and call per sub-env."""
    from collector.policy_loaders import TorchPolicy

    return type("Unbatched", (TorchPolicy,), {"reset_row": None, "act_rows": None})


#: What ``policy_cfg(..., batched=False)`` names (``collect`` imports this file as a module).
Unbatched = None if __name__ == "__main__" else unbatched_class()


def policy_cfg(state_dict: str, batched: bool = True) -> dict[str, Any]:
    target = "collector.policy_loaders.TorchPolicy" if batched else "bench_policy.Unbatched"
    return {
        "_target_": target,
        "module": {"_target_": "bench_policy.Mlp"},
        "state_dict": state_dict,
        "device": "cpu",
        "deterministic": True,
    }


def save_mlp(env_id: str, folder: str) -> str:
    """A seeded random ``Mlp`` for ``env_id`` saved as a state_dict; returns its path."""
    import gymnasium as gym

    env = gym.make(env_id)
    torch.manual_seed(SEED)
    net = Mlp(env.observation_space, env.action_space)
    env.close()
    path = os.path.join(folder, f"{env_id.split('-')[0].lower()}-mlp.pt")
    torch.save(net.state_dict(), path)
    return path


def plain_loop(env_id: str, state_dict: str, n: int, steps: int, cut: int | None) -> dict:
    """Env steps per second of a bare loop with the same policy and forward pass."""
    import gymnasium as gym

    from collector.policies import build_policy

    if n == 1:
        env: Any = gym.make(env_id, max_episode_steps=cut)
        policy: Any = build_policy(policy_cfg(state_dict), env)
    else:
        env = gym.make_vec(env_id, num_envs=n, vectorization_mode="sync", max_episode_steps=cut)
        spaces = type("S", (), {})()
        spaces.observation_space = env.single_observation_space
        spaces.action_space = env.single_action_space
        policy = build_policy(policy_cfg(state_dict), spaces)
    obs, _ = env.reset(seed=SEED)
    done_steps = 0
    with InferenceClock() as clock:
        start = time.perf_counter()
        if n == 1:
            policy.reset(SEED)
            act, step = policy.act, env.step
            while done_steps < steps:
                obs, _, term, trunc, _ = step(act(obs))
                done_steps += 1
                if term or trunc:
                    obs, _ = env.reset()
        else:
            for i in range(n):
                policy.reset_row(i, SEED + i)
            act, step = policy.act_rows, env.step
            while done_steps < steps:
                obs, _, _, _, _ = step(act(obs, n))
                done_steps += n
        wall = time.perf_counter() - start
    env.close()
    return {"steps_per_s": done_steps / wall, "inference": clock.seconds / wall}


def collect_run(
    env_id: str,
    state_dict: str,
    n: int,
    episodes: int,
    cut: int | None,
    root: str,
    tag: str,
    batched: bool = True,
) -> dict[str, Any]:
    """One ``collect`` call with the torch policy, timed whole."""
    from collector.collect import collect

    conf = {
        "env": env_id,
        "episodes": episodes,
        "num_envs": n,
        "vectorization_mode": "sync",
        "max_episode_steps": cut,
        "seed": SEED,
        "dataset_id": f"bench/policy-{tag}-v0",
        "datasets_root": root,
        "policy": policy_cfg(state_dict, batched),
        "progress": False,
    }
    with InferenceClock() as clock:
        start = time.perf_counter()
        res = collect(conf)
        wall = time.perf_counter() - start
    shutil.rmtree(res.path, ignore_errors=True)
    return {
        "steps": res.total_steps,
        "wall": wall,
        "steps_per_s": res.total_steps / wall,
        "inference": clock.seconds / wall,
        "fingerprint": res.fingerprint,
    }


def measure(env_id: str, state_dict: str, n: int, args: argparse.Namespace, root: str) -> dict:
    """Plain loop and collect for one env and width, interleaved; medians."""
    cheetah = env_id.startswith("HalfCheetah")
    cut = args.cheetah_steps if cheetah else None
    episodes = max(max(WIDTHS), args.cheetah_episodes if cheetah else args.cartpole_episodes)
    plains, runs, unbatched = [], [], []
    for r in range(args.repeats):
        run = collect_run(env_id, state_dict, n, episodes, cut, root, f"{n}-{r}")
        plains.append(plain_loop(env_id, state_dict, n, run["steps"], cut))
        runs.append(run)
        if n > 1:  # the same run with an act call per sub-env, as before batched inference
            unbatched.append(
                collect_run(env_id, state_dict, n, episodes, cut, root, f"u{n}-{r}", False)
            )
    assert len({x["fingerprint"] for x in runs}) == 1, "same config, different fingerprints"
    same = {x["fingerprint"] for x in unbatched} <= {runs[0]["fingerprint"]}
    plain = statistics.median(p["steps_per_s"] for p in plains)
    rate = statistics.median(x["steps_per_s"] for x in runs)
    return {
        "env": env_id,
        "num_envs": n,
        "steps": runs[0]["steps"],
        "plain_steps_per_s": plain,
        "plain_inference_share": statistics.median(p["inference"] for p in plains),
        "collect_steps_per_s": rate,
        "collect_inference_share": statistics.median(x["inference"] for x in runs),
        "ratio": statistics.median(
            x["steps_per_s"] / p["steps_per_s"] for x, p in zip(runs, plains, strict=True)
        ),
        "unbatched_steps_per_s": (
            statistics.median(x["steps_per_s"] for x in unbatched) if unbatched else None
        ),
        "fingerprint": runs[0]["fingerprint"],
        "same_fingerprint_unbatched": same,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cartpole-episodes", type=int, default=2000)
    ap.add_argument("--cheetah-episodes", type=int, default=64)
    ap.add_argument("--cheetah-steps", type=int, default=200, help="HalfCheetah episode cut")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--envs", default="CartPole-v1,HalfCheetah-v5")
    ap.add_argument("--quick", action="store_true", help="half the episodes, 1 repeat")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if args.quick:
        args.cartpole_episodes //= 2
        args.cheetah_episodes //= 2
        args.repeats = 1
    torch.set_num_threads(args.threads)
    folder = tempfile.mkdtemp(prefix="harvest-bench-policy-")
    root = os.path.join(folder, "datasets")
    print(f"datasets root {root}; torch {torch.__version__}, {args.threads} thread(s), CPU")
    results = []
    try:
        for env_id in args.envs.split(","):
            state_dict = save_mlp(env_id, folder)
            collect_run(env_id, state_dict, 1, 2, 20, root, "warm")  # imports, first env
            for n in WIDTHS:
                res = measure(env_id, state_dict, n, args, root)
                results.append(res)
                print(
                    f"  {env_id} num_envs={n}: {res['steps']:,} steps; plain "
                    f"{res['plain_steps_per_s']:,.0f}/s, collect "
                    f"{res['collect_steps_per_s']:,.0f}/s",
                    flush=True,
                )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print()
    print(
        "| env | num_envs | plain loop steps/s (inference share) | collect steps/s (inference"
        " share) | collect / plain | collect, one act per sub-env |"
    )
    print("|---|---|---|---|---|---|")
    for r in results:
        unb = r["unbatched_steps_per_s"]
        other = "" if r["same_fingerprint_unbatched"] else " (other fingerprint)"
        print(
            f"| {r['env']} | {r['num_envs']} | {r['plain_steps_per_s']:,.0f} "
            f"({r['plain_inference_share']:.0%}) | {r['collect_steps_per_s']:,.0f} "
            f"({r['collect_inference_share']:.0%}) | {r['ratio']:.2f}x | "
            f"{'-' if unb is None else f'{unb:,.0f}{other}'} |"
        )
    for env_id in args.envs.split(","):
        prints = {r["fingerprint"] for r in results if r["env"] == env_id}
        print(f"{env_id}: same fingerprint for num_envs {WIDTHS}: {verdict(len(prints) == 1)}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {
                    "command": " ".join(shlex.quote(a) for a in sys.argv),
                    "python": platform.python_version(),
                    "torch": torch.__version__,
                    "results": results,
                },
                fh,
                indent=2,
            )


if __name__ == "__main__":
    main()
