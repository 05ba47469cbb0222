"""``policy=mixture``: one sub-policy per episode, chosen by seeded weights (issue 20).

D4RL's "medium-expert" sets mix the episodes of two agents; a mixture does it declaratively::

    policy:
      _target_: collector.policy_mixture.MixturePolicy
      policies: [{_target_: collector.policies.RandomPolicy},
                 {_target_: collector.policies.CartPoleHeuristic}]
      weights: [0.3, 0.7]

Each sub-policy is built once (``build_policy``, so nested ``epsilon`` works too). At
``reset(seed)`` the episode's sub-policy is drawn from a stream derived from the episode's
policy seed alone, and the sub-policy is reset with another seed derived from it: so which
sub-policy played episode ``i`` depends only on the root seed and ``i``, and the fingerprint is
the same on every layout (local, vector envs, Ray). ``mixture_choices`` recomputes each
episode's choice from the weights and root entropy in the dataset's provenance, so the choice
needs no column of its own.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector.utils import create_empty_array

from collector.errors import HarvestError, UsageError
from collector.policies import (
    Policy,
    batch_actor,
    build_policy,
    check_epsilon,
    derived_seed,
    has_rows,
)
from collector.seeding import policy_seed
from collector.spaces import batch_item, set_batch_rows

__all__ = ["MixturePolicy", "check_mixture", "choose_policy", "mixture_choices"]

_CHOICE, _SUB = 0x6D697831, 0x6D697832  # sub-stream ids of derived_seed ("mix1", "mix2")
_EXAMPLE = "e.g. policy.policies=[{_target_: collector.policies.RandomPolicy}]"


def check_mixture(policies: Any, weights: Any) -> tuple[list[dict[str, Any]], np.ndarray]:
    """The sub-policy configs and their weights, checked (``weights=None``: equal weights).

    Raises:
        UsageError: one line naming the key (``policy.policies``, ``policy.weights[i]``, ...)
            and the fix.
    """
    if isinstance(policies, str | bytes) or not isinstance(policies, Sequence):
        raise UsageError(f"policy.policies={policies!r} must be a list of configs, {_EXAMPLE}")
    if not policies:
        raise UsageError(f"policy.policies is empty; give at least one policy config, {_EXAMPLE}")
    configs = []
    for i, cfg in enumerate(policies):
        key = f"policy.policies[{i}]"
        if not isinstance(cfg, Mapping) or not cfg.get("_target_"):
            raise UsageError(
                f"{key}={cfg!r} is not a policy config; give a mapping with a _target_, "
                "e.g. {_target_: collector.policies.RandomPolicy}"
            )
        if "epsilon" in cfg:
            check_epsilon(cfg["epsilon"], f"{key}.epsilon")
        configs.append(dict(cfg))
    if weights is None:
        return configs, np.ones(len(configs))
    if isinstance(weights, np.ndarray):
        weights = weights.tolist()
    if isinstance(weights, str | bytes) or not isinstance(weights, Sequence):
        raise UsageError(f"policy.weights={weights!r} must be a list of numbers, one per policy")
    if len(weights) != len(configs):
        raise UsageError(
            f"policy.weights has {len(weights)} weight(s) but policy.policies has "
            f"{len(configs)} policies; give one weight per policy (or policy.weights=null for "
            "equal weights)"
        )
    for i, w in enumerate(weights):
        if not isinstance(w, numbers.Real) or isinstance(w, bool) or not math.isfinite(w) or w < 0:
            raise UsageError(f"policy.weights[{i}]={w!r} must be a finite number >= 0")
    if not sum(weights) > 0:
        raise UsageError("policy.weights are all 0; give at least one policy a positive weight")
    return configs, np.asarray(weights, np.float64)


def choose_policy(weights: Sequence[float] | np.ndarray, seed: int | None) -> int:
    """Index of the sub-policy that plays the episode whose policy seed is ``seed``.

    One uniform draw from a stream derived from ``seed`` alone (weights need not sum to 1;
    a weight of 0 is never chosen).

    >>> choose_policy([0, 1], 7), choose_policy([1, 0], 7)
    (1, 0)
    """
    w = np.asarray(weights, np.float64)
    cumulative = np.cumsum(w)
    u = np.random.default_rng(derived_seed(seed, _CHOICE)).random()
    k = int(np.searchsorted(cumulative, u * cumulative[-1], side="right"))
    return min(k, int(np.flatnonzero(w)[-1]))  # float rounding never picks a weight-0 policy


def mixture_choices(
    weights: Sequence[float], entropy: int, episode_ids: Sequence[int] | np.ndarray
) -> np.ndarray:
    """Which sub-policy played each episode of a ``policy=mixture`` dataset.

    ``weights`` as in the dataset's ``provenance["config"]["policy"]`` and ``entropy`` its
    ``provenance["seed_entropy"]``: a mixture's choice depends on nothing else, so it needs
    no column of its own. (A nested mixture's choice follows from its own weights and the
    sub-policy seed; not computed here.)
    """
    return np.array(
        [choose_policy(weights, policy_seed(entropy, int(i))) for i in episode_ids], np.int64
    )


class MixturePolicy:
    """Per episode, one of ``policies`` drawn with probabilities proportional to ``weights``.

    Args:
        policies: sub-policy configs (each a mapping with a ``_target_``), built once each.
        weights: one non-negative weight per sub-policy; None: equal weights.
        action_space: the env's (single) action space.
        observation_space: the env's (single) observation space.
    """

    def __init__(
        self,
        policies: Sequence[Mapping[str, Any]],
        action_space: spaces.Space,
        observation_space: spaces.Space,
        weights: Sequence[float] | None = None,
    ) -> None:
        self.configs, w = check_mixture(policies, weights)
        self.weights = w / w.sum()
        self._raw_weights = w
        self.action_space = action_space
        self.observation_space = observation_space
        # build_policy reads only the two spaces from its env argument
        env = SimpleNamespace(action_space=action_space, observation_space=observation_space)
        self.policies: list[Policy] = []
        for i, cfg in enumerate(self.configs):
            try:
                self.policies.append(build_policy(cfg, env))
            except HarvestError as e:  # say which sub-policy, keep the class (and exit code)
                raise type(e)(f"policy.policies[{i}]: {e}") from e
        self.current = 0  # the sub-policy of the running episode
        self._row_choice = np.zeros(0, np.int64)  # per batch row, in rows mode
        self._actors: dict[tuple[int, int], Callable[[Any], Any]] = {}
        # every sub-policy acts in rows: so does the mixture (else one instance per sub-env)
        if all(has_rows(p) for p in self.policies):
            self.reset_row, self.act_rows = self._reset_row, self._act_rows

    def choose(self, seed: int | None) -> int:
        """Index of the sub-policy that plays the episode whose policy seed is ``seed``."""
        return choose_policy(self._raw_weights, seed)

    def reset(self, seed: int | None) -> None:
        """Draw the episode's sub-policy from ``seed`` and reset it with a seed derived from it."""
        self.current = self.choose(seed)
        self.policies[self.current].reset(derived_seed(seed, _SUB))

    def act(self, obs: Any) -> Any:
        """The action of the episode's sub-policy."""
        return self.policies[self.current].act(obs)

    def act_batch(self, obs: Any, n: int) -> Any:
        """``n`` actions of the sub-policy ``reset`` chose, for a batch sharing one reset.

        (The layout-dependent ``vector_entry_point`` tier: one episode stream per segment.)
        """
        key = (self.current, n)
        actor = self._actors.get(key)
        if actor is None:
            policy = self.policies[self.current]
            actor = batch_actor(policy, self.observation_space, self.action_space, n)
            self._actors[key] = actor
        return actor(obs)

    def _reset_row(self, row: int, seed: int | None) -> None:
        """``reset(seed)`` for the episode starting in batch row ``row``."""
        if row >= len(self._row_choice):
            grow = np.zeros(row + 1 - len(self._row_choice), np.int64)
            self._row_choice = np.concatenate([self._row_choice, grow])
        k = self._row_choice[row] = self.choose(seed)
        self.policies[k].reset_row(row, derived_seed(seed, _SUB))

    def _act_rows(self, obs: Any, n: int) -> Any:
        """``act`` for every row: rows grouped by sub-policy, one ``act_rows`` call each.

        Each sub-policy is called with the whole batch (its rows keep their indices and
        streams) and gives the rows whose episode it plays.
        """
        choice = self._row_choice[:n]
        if len(choice) < n:  # rows never reset are idle: their actions are discarded
            choice = np.concatenate([choice, np.zeros(n - len(choice), np.int64)])
        chosen = np.unique(choice)
        if len(chosen) == 1:
            return self.policies[int(chosen[0])].act_rows(obs, n)
        out = create_empty_array(self.action_space, n)
        for k in chosen.tolist():
            idx = np.flatnonzero(choice == k)
            actions = self.policies[k].act_rows(obs, n)
            set_batch_rows(self.action_space, out, idx, batch_item(self.action_space, actions, idx))
        return out

    def provenance(self) -> dict[str, Any]:
        """The normalized weights and each sub-policy's target (and provenance, if it has one)."""
        subs = []
        for cfg, policy in zip(self.configs, self.policies, strict=True):
            entry: dict[str, Any] = {"_target_": str(cfg["_target_"])}
            inner = getattr(policy, "provenance", None)
            if callable(inner):
                entry.update(inner())
            subs.append(entry)
        return {"weights": self.weights.tolist(), "policies": subs}
