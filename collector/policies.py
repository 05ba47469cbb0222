"""Policies: what chooses actions during collection.

The contract (DESIGN.md section 5) that keeps datasets reproducible whatever the layout:
``reset(seed)`` is called before every episode with a seed derived from the episode id, and
``act(obs)`` depends only on the observation, episode-local state and the policy's own stream
seeded there. A policy may hold heavy state (a model): it is built once per process.

Any object with ``act(obs)`` (and optionally ``reset(seed)``) is a policy; a plain callable
``f(obs) -> action`` is wrapped by ``as_policy``.
"""

from __future__ import annotations

import copy
import functools
import importlib
import inspect
import numbers
import os
import sys
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from gymnasium import spaces

from collector.errors import UsageError

__all__ = [
    "CallablePolicy",
    "CartPoleHeuristic",
    "FILE_KEYS",
    "EpsilonPolicy",
    "Policy",
    "RandomPolicy",
    "add_import_dir",
    "as_policy",
    "batch_actor",
    "build_policy",
    "check_epsilon",
    "derived_seed",
    "has_rows",
    "import_failure",
    "locate",
    "resolve_files",
]


@runtime_checkable
class Policy(Protocol):
    """What collection needs from a policy."""

    def reset(self, seed: int | None) -> None:
        """Start an episode; draw all randomness from a stream seeded with ``seed``."""

    def act(self, obs: Any) -> Any:
        """Return the action for ``obs``."""


class RandomPolicy:
    """Uniform random actions from the policy's own per-episode stream.

    Never uses the shared ``action_space.sample()`` RNG, which ``env.reset(seed=...)`` does
    not seed. Discrete and bounded Box spaces draw uniforms in bulk (cheap per step); other
    spaces sample from a private copy of the space seeded per episode.
    """

    _BULK = 256

    def __init__(self, action_space: spaces.Space) -> None:
        self.action_space = action_space
        self._rng = np.random.default_rng(0)
        self._buf = np.zeros(0)
        self._i = 0
        space = action_space
        if isinstance(space, spaces.Discrete):
            self._kind = "discrete"
        elif (
            isinstance(space, spaces.Box)
            and space.dtype.kind == "f"
            and space.is_bounded("both")
            and space.shape == space.low.shape
        ):
            self._kind = "box"
            self._low = space.low.astype(np.float64)
            self._span = space.high.astype(np.float64) - self._low
        else:
            self._kind = "sample"
            self._space = copy.deepcopy(space)  # its own RNG, seeded per episode

    def reset(self, seed: int | None) -> None:
        """Reseed the per-episode stream."""
        self._rng = np.random.default_rng(seed)
        self._i = len(self._buf)  # force a refill from the new stream
        if self._kind == "sample":
            self._space.seed(None if seed is None else int(seed) % 2**63)

    def act(self, obs: Any) -> Any:
        """A uniformly random action; ``obs`` is ignored."""
        if self._kind == "sample":
            return self._space.sample()
        if self._i >= len(self._buf):
            shape = (self._BULK,) if self._kind == "discrete" else (self._BULK, *self._low.shape)
            self._buf = self._rng.random(shape)
            self._i = 0
        u = self._buf[self._i]
        self._i += 1
        space = self.action_space
        if self._kind == "discrete":
            return space.dtype.type(space.start + int(u * int(space.n)))
        return (self._low + u * self._span).astype(space.dtype)

    def act_batch(self, obs: Any, n: int) -> Any:
        """``n`` random actions at once (a vector env's batch), from the same stream."""
        space = self.action_space
        if self._kind == "discrete":
            u = self._rng.random(n)
            return (space.start + (u * int(space.n)).astype(np.int64)).astype(space.dtype)
        if self._kind == "box":
            u = self._rng.random((n, *self._low.shape))
            return (self._low + u * self._span).astype(space.dtype)
        from gymnasium.vector.utils import concatenate, create_empty_array

        return concatenate(
            space, [self._space.sample() for _ in range(n)], create_empty_array(space, n)
        )


class CartPoleHeuristic:
    """A deterministic CartPole-v1 controller that balances the pole (returns ~500).

    Pushes the cart toward the side the pole is falling to, with a little damping from the
    cart's own velocity.
    """

    def __init__(self, gain: float = 1.0) -> None:
        self.gain = gain

    def reset(self, seed: int | None) -> None:
        """Deterministic: nothing to seed."""

    def act(self, obs: Any) -> int:
        """Push right (1) when the pole leans or falls right, else left (0)."""
        x, x_dot, theta, theta_dot = (float(v) for v in obs)
        return int(self.gain * (theta + 0.5 * theta_dot) + 0.01 * x + 0.1 * x_dot > 0)

    def act_batch(self, obs: Any, n: int) -> np.ndarray:
        """The same rule for a batch of observations (rows)."""
        x, x_dot, theta, theta_dot = np.asarray(obs, np.float64).T
        return (self.gain * (theta + 0.5 * theta_dot) + 0.01 * x + 0.1 * x_dot > 0).astype(np.int64)

    def reset_row(self, row: int, seed: int | None) -> None:
        """Deterministic: nothing to seed (rows share the rule)."""

    def act_rows(self, obs: Any, n: int) -> np.ndarray:
        """``act_batch``: the same float64 arithmetic as ``act``, so the same actions."""
        return self.act_batch(obs, n)


class CallablePolicy:
    """Wrap ``f(obs) -> action`` as a policy (no randomness, nothing to reset)."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def reset(self, seed: int | None) -> None:
        """Stateless: nothing to reset."""

    def act(self, obs: Any) -> Any:
        """Call the wrapped function."""
        return self.fn(obs)


def derived_seed(seed: int | None, stream: int) -> int | None:
    """A 64-bit seed for sub-stream ``stream`` of an episode's policy ``seed`` (None stays None).

    Independent of ``np.random.default_rng(seed)``, the stream a policy draws from itself.

    >>> derived_seed(7, 1) == derived_seed(7, 1) != derived_seed(7, 2)
    True
    """
    if seed is None:
        return None
    state = np.random.SeedSequence(int(seed), spawn_key=(int(stream),)).generate_state(2)
    return int(state[0]) | (int(state[1]) << 32)


def check_epsilon(value: Any, key: str = "policy.epsilon") -> float:
    """``value`` as a probability in [0, 1], or a one-line ``UsageError`` naming ``key``."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 <= value <= 1
    if not ok:
        raise UsageError(f"{key}={value!r} must be a number in [0, 1], e.g. {key}=0.1")
    return float(value)


class EpsilonPolicy:
    """``policy``'s action, replaced with probability ``epsilon`` by a uniform random one.

    ``build_policy`` wraps any policy whose config has ``epsilon`` (issue 20). The wrapped
    policy still acts every step (its state and stream advance as without noise), so
    ``epsilon=0`` records exactly the bare policy's data. The coin flips and the random
    actions come from two streams derived from the episode's seed in ``reset``, independent
    of the wrapped policy's own. When the wrapped policy acts in rows (``reset_row`` and
    ``act_rows``: one call for a vector env's batch, each row its own episode), so does this
    wrapper, each row with its own noise streams: the same actions as one episode at a time.
    """

    _COINS, _ACTIONS = 0x65707331, 0x65707332  # sub-stream ids of derived_seed ("eps1", "eps2")

    def __init__(
        self,
        policy: Policy,
        epsilon: float,
        action_space: spaces.Space,
        observation_space: spaces.Space,
    ) -> None:
        self.policy = policy
        self.epsilon = check_epsilon(epsilon)
        self.action_space = action_space
        self.observation_space = observation_space
        self._random = RandomPolicy(action_space)
        self._coins = np.random.default_rng(0)
        self._actors: dict[int, Callable[[Any], Any]] = {}
        self._rows: list[tuple[np.random.Generator, RandomPolicy]] = []  # per row: coins, random
        if has_rows(policy):
            self.reset_row, self.act_rows = self._reset_row, self._act_rows

    def reset(self, seed: int | None) -> None:
        """Reset the wrapped policy with ``seed``, the noise streams with seeds derived from it."""
        self.policy.reset(seed)
        self._coins = np.random.default_rng(derived_seed(seed, self._COINS))
        self._random.reset(derived_seed(seed, self._ACTIONS))

    def act(self, obs: Any) -> Any:
        """The wrapped policy's action, or with probability ``epsilon`` a random one."""
        action = self.policy.act(obs)
        if self.epsilon and self._coins.random() < self.epsilon:
            return self._random.act(obs)
        return action

    def act_batch(self, obs: Any, n: int) -> Any:
        """``n`` actions: the wrapped policy's batch with each row replaced at rate ``epsilon``.

        One noise stream for the whole batch, reset by ``reset`` (the layout-dependent
        ``vector_entry_point`` tier).
        """
        actor = self._actors.get(n)
        if actor is None:
            actor = batch_actor(self.policy, self.observation_space, self.action_space, n)
            self._actors[n] = actor
        actions = actor(obs)
        if not self.epsilon:
            return actions
        noisy = np.flatnonzero(self._coins.random(n) < self.epsilon)
        return self._replace(actions, n, noisy, lambda: self._random.act_batch(None, len(noisy)))

    def _reset_row(self, row: int, seed: int | None) -> None:
        """``reset(seed)`` for the episode starting in batch row ``row``."""
        self.policy.reset_row(row, seed)
        while len(self._rows) <= row:
            self._rows.append((self._coins, RandomPolicy(self.action_space)))
        random = self._rows[row][1]
        random.reset(derived_seed(seed, self._ACTIONS))
        self._rows[row] = (np.random.default_rng(derived_seed(seed, self._COINS)), random)

    def _act_rows(self, obs: Any, n: int) -> Any:
        """``act`` for every row of the batch, each row drawing from its own noise streams."""
        actions = self.policy.act_rows(obs, n)
        if not self.epsilon:
            return actions
        rows = self._rows
        noisy = [i for i in range(min(n, len(rows))) if rows[i][0].random() < self.epsilon]
        if not noisy:
            return actions
        from gymnasium.vector.utils import concatenate, create_empty_array

        space = self.action_space
        return self._replace(
            actions,
            n,
            np.asarray(noisy),
            lambda: concatenate(
                space, [rows[i][1].act(None) for i in noisy], create_empty_array(space, len(noisy))
            ),
        )

    def _replace(self, actions: Any, n: int, noisy: np.ndarray, random: Callable[[], Any]) -> Any:
        """``actions`` with rows ``noisy`` replaced by the batch ``random()`` returns."""
        if not len(noisy):
            return actions
        from gymnasium.vector.utils import create_empty_array

        from collector.spaces import batch_item, set_batch_rows

        space = self.action_space
        keep = np.setdiff1d(np.arange(n), noisy)
        out = create_empty_array(space, n)
        set_batch_rows(space, out, keep, batch_item(space, actions, keep))
        set_batch_rows(space, out, noisy, random())
        return out

    def provenance(self) -> dict[str, Any]:
        """The wrapped policy's provenance (when it has one) and ``epsilon``."""
        inner = getattr(self.policy, "provenance", None)
        return {"epsilon": self.epsilon, **(inner() if callable(inner) else {})}


def as_policy(obj: Any) -> Policy:
    """Return ``obj`` as a ``Policy``: objects with ``act`` as they are, callables wrapped.

    Raises:
        TypeError: for anything else.
    """
    if hasattr(obj, "act"):
        if not hasattr(obj, "reset"):
            obj.reset = lambda seed: None
        return obj
    if callable(obj):
        return CallablePolicy(obj)
    raise TypeError(f"{type(obj).__name__} is not a policy: give it act(obs) or make it callable")


def has_rows(policy: Any) -> bool:
    """Whether ``policy`` acts for many episodes at once, each row with its own stream.

    Such a policy has ``reset_row(row, seed)`` (start an episode in row ``row``, like
    ``reset(seed)``) and ``act_rows(obs, n)`` (``n`` actions for a batch of observations, row
    ``i`` drawing only from its own stream). Sync/async vector collection then calls it once
    per step with the whole batch, and stays layout-independent (DESIGN.md section 5).
    """
    return callable(getattr(policy, "reset_row", None)) and callable(
        getattr(policy, "act_rows", None)
    )


def batch_actor(
    policy: Policy, observation_space: spaces.Space, action_space: spaces.Space, n: int
) -> Callable[[Any], Any]:
    """``f(batched_obs) -> batched_actions`` for ``n`` sub-envs sharing ``policy``.

    Uses the policy's ``act_batch(obs, n)`` when it has one; otherwise calls ``act`` per
    sub-env (correct, slower).
    """
    if hasattr(policy, "act_batch"):
        return functools.partial(policy.act_batch, n=n)
    from gymnasium.vector.utils import concatenate, create_empty_array

    from collector.spaces import batch_item

    out = create_empty_array(action_space, n)

    def act(obs: Any) -> Any:
        rows = [policy.act(batch_item(observation_space, obs, i)) for i in range(n)]
        return concatenate(action_space, rows, out)

    return act


def locate(path: str, cwd: str | None = None) -> Any:
    """The object a dotted path names (``pkg.module.Class``, ``module.func``, ``module.A.b``).

    Imports the longest module prefix of ``path`` and takes the rest as attributes, like
    Hydra's ``_target_`` lookup, but without its logging and with the real cause kept: a
    module that exists but fails to import (a missing dependency, a syntax error) raises that
    error, not "module not found". A top-level module that is not importable but sits in the
    working directory ``cwd`` (default: the current one) is imported from there, as it would
    be by ``python -m`` or a Hydra app's own folder: ``cwd`` is appended to ``sys.path``, so
    installed packages still win.

    Raises:
        ModuleNotFoundError: no prefix of ``path`` is a module.
        AttributeError: the module has no such attribute.
        Exception: whatever importing the module raised.
    """
    try:
        return _locate(path)
    except ModuleNotFoundError as e:
        top = path.split(".", 1)[0]
        if e.name != top or not add_import_dir(cwd or os.getcwd(), top):
            raise
    return _locate(path)


def add_import_dir(folder: str, module: str | None = None) -> bool:
    """Append ``folder`` to ``sys.path`` (if ``module`` is given: only if it holds that module).

    Ray workers call it with the driver's working directory, so ``_target_``s in the user's
    folder import there too. Returns whether ``sys.path`` changed.
    """
    folder = os.path.abspath(folder)
    here = Path(folder)
    if module is not None and not ((here / f"{module}.py").is_file() or (here / module).is_dir()):
        return False
    if folder in sys.path or not here.is_dir():
        return False
    sys.path.append(folder)
    importlib.invalidate_caches()
    return True


def _locate(path: str) -> Any:
    parts = path.split(".")
    if not all(parts):
        raise ValueError(f"{path!r} is not a dotted path")
    for i in range(len(parts), 0, -1):
        name = ".".join(parts[:i])
        try:
            obj = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name is not None and (name == e.name or name.startswith(f"{e.name}.")):
                if i > 1:
                    continue  # ``name`` is not a module: try a shorter prefix
            raise
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise AssertionError("unreachable")  # pragma: no cover


def import_failure(error: BaseException, path: str, cwd: str | None = None) -> str:
    """Why ``locate(path)`` failed, for a one-line message: the error, its text, where.

    Names the missing module (never "module None"), the file and line of the user's code
    that raised while importing, and, for a top-level module found nowhere, the folder it
    was also looked for in.

    >>> import_failure(ModuleNotFoundError("No module named 'x'", name="x"), "x.P", "/w")
    "ModuleNotFoundError: No module named 'x' (not installed, and no x.py or x/ in /w)"
    """
    kind = type(error).__name__
    text = str(error).splitlines()[0].strip() if str(error).strip() else ""
    name = getattr(error, "name", None)
    if name and name not in text:
        text = f"{text} (module {name!r})" if text else f"module {name!r}"
    out = f"{kind}: {text}" if text else f"{kind} raised with no message"
    where = _raised_at(error)
    if where:
        return f"{out}, raised at {where}"
    top = path.split(".", 1)[0]
    if isinstance(error, ModuleNotFoundError) and name == top:
        folder = os.path.abspath(cwd or os.getcwd())
        return f"{out} (not installed, and no {top}.py or {top}/ in {folder})"
    return out


def _raised_at(error: BaseException) -> str:
    """``file:line`` of the innermost frame of the user's code in ``error``'s traceback."""
    frames = traceback.extract_tb(error.__traceback__)
    ours = (os.path.dirname(os.path.abspath(__file__)) + os.sep, "<frozen importlib")
    for frame in reversed(frames):
        if not frame.filename.startswith(ours) and "importlib" not in frame.filename:
            return f"{frame.filename}:{frame.lineno}"
    return ""


#: Keys of a policy config (at any depth) that name checkpoint files (CONTRACT20).
FILE_KEYS = ("path", "state_dict")


def resolve_files(cfg: Any, cwd: str) -> Any:
    """``cfg`` with every relative ``path``/``state_dict`` (at any depth) made absolute.

    Relative to ``cwd``: the driver's working directory, also on Ray workers (whose own
    working directory is elsewhere). URLs (``scheme://...``) are left as they are.

    >>> resolve_files({"path": "a.zip", "policies": [{"state_dict": "/b.pt"}]}, "/w")
    {'path': '/w/a.zip', 'policies': [{'state_dict': '/b.pt'}]}
    """
    if isinstance(cfg, Mapping):
        out = {}
        for key, value in cfg.items():
            if key in FILE_KEYS and isinstance(value, (str, os.PathLike)):
                text = os.fspath(value)
                if "://" not in text and not os.path.isabs(os.path.expanduser(text)):
                    value = os.path.join(cwd, text)
                else:
                    value = os.path.expanduser(text)
            out[key] = resolve_files(value, cwd)
        return out
    if isinstance(cfg, (list, tuple)):
        return [resolve_files(v, cwd) for v in cfg]
    return cfg


def build_policy(policy_cfg: Mapping[str, Any], env: Any, cwd: str | None = None) -> Policy:
    """Instantiate the ``policy`` config once per process (it may hold a model).

    ``_target_`` may name a class or factory (called with the config's other keys, plus
    ``action_space``/``observation_space`` when it accepts them) or a plain ``f(obs)`` function
    (wrapped as it is, with the other keys bound as keyword arguments).

    Args:
        policy_cfg: the ``policy`` config.
        env: anything with ``observation_space`` and ``action_space``.
        cwd: the driver's working directory (default: this process's): relative checkpoint
            files (``path``, ``state_dict``) are resolved against it, and a ``_target_``
            module found nowhere else is imported from it.

    Raises:
        UsageError: the target cannot be imported or rejects its arguments.
    """
    if "epsilon" in policy_cfg:  # any policy may carry epsilon-random noise (issue 20)
        cfg = dict(policy_cfg)
        epsilon = check_epsilon(cfg.pop("epsilon"))
        spaces_ = (env.action_space, env.observation_space)
        return EpsilonPolicy(build_policy(cfg, env, cwd), epsilon, *spaces_)
    cwd = os.path.abspath(cwd or os.getcwd())
    cfg = resolve_files(dict(policy_cfg), cwd)
    target = cfg.pop("_target_", None)
    if not target:
        raise UsageError("policy has no _target_; use policy=random or set policy._target_")
    try:
        obj = locate(str(target), cwd)
    except Exception as e:  # the user's module may raise anything while it imports
        raise UsageError(
            f"policy._target_={target!r} cannot be imported ({import_failure(e, str(target), cwd)}"
            "); check the module path and that its package is installed (or in the current folder)"
        ) from e
    if not callable(obj):
        raise UsageError(f"policy._target_={target!r} is not a class or function")
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        params = {}
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
    extra = {"action_space": env.action_space, "observation_space": env.observation_space}
    if inspect.isclass(obj) or "action_space" in params or "observation_space" in params:
        kwargs = {**{k: v for k, v in extra.items() if k in params or takes_kwargs}, **cfg}
        try:
            return as_policy(obj(**kwargs))
        except TypeError as e:
            raise UsageError(f"policy._target_={target!r} rejected its arguments: {e}") from e
    if cfg:
        obj = functools.partial(obj, **cfg)
    return as_policy(obj)
