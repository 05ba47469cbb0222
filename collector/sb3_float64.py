"""Stable-Baselines3 Box actors evaluated in float64, for ``SB3Policy`` (issue 20 item 2).

SB3 runs its networks in float32, where a batched matrix product may round a row's last bit
differently than a batch of one, so a Box action (and a dataset's fingerprint) could depend
on ``num_envs``. Here the actor of a standard policy is copied to float64: observations are
preprocessed as SB3 does (the same float32 values), the forward pass runs in float64, and
the action (the Gaussian mean for PPO/A2C, ``tanh`` then rescaled for SAC, the rescaled
``mu`` for TD3/DDPG) is rounded to the space's float32 once, at the end. Its rounding
differences between widths vanish there in practice, and it equals SB3's ``predict`` up to
float32 rounding. Other policies (gSDE, custom classes) return None: they stay in float32.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from gymnasium import spaces

__all__ = ["Float64Actor", "float64_actor"]

#: ``f(obs batch) -> (action before clipping, std or None)``, both float64 arrays.
Float64Actor = Callable[[Any], tuple[np.ndarray, "np.ndarray | None"]]


def float64_actor(policy: Any) -> Float64Actor | None:
    """The float64 actor of an SB3 policy with a Box action space, or None if not standard.

    Args:
        policy: ``model.policy`` of a loaded SB3 model (left as it is: the actor is copied).

    Returns:
        ``f(obs)`` for a batch of observations: the deterministic action in the action
        space's scale (float64, not yet clipped) and, for PPO/A2C's Gaussian, its std per
        row (None otherwise); or None for policies this does not know (they stay float32).
    """
    import torch
    from stable_baselines3.common.distributions import DiagGaussianDistribution
    from stable_baselines3.common.policies import ActorCriticPolicy
    from stable_baselines3.common.preprocessing import preprocess_obs
    from stable_baselines3.sac.policies import SACPolicy
    from stable_baselines3.td3.policies import TD3Policy

    space = policy.action_space
    if not isinstance(space, spaces.Box):
        return None
    if type(policy).__module__.split(".")[0] != "stable_baselines3":
        return None  # a user's subclass may change the forward pass
    if isinstance(policy, ActorCriticPolicy):
        if type(policy.action_dist) is not DiagGaussianDistribution or policy.squash_output:
            return None  # gSDE, squashed: stay in float32
        twin = copy.deepcopy(policy).double()

        def head(x: Any) -> tuple[Any, Any]:
            latent = twin.mlp_extractor.forward_actor(twin.pi_features_extractor(x))
            mean = twin.action_net(latent)
            return mean, torch.exp(twin.log_std).expand_as(mean)

        squashed = False
    elif isinstance(policy, SACPolicy) and not policy.actor.use_sde:
        twin = copy.deepcopy(policy.actor).double()

        def head(x: Any) -> tuple[Any, Any]:
            return torch.tanh(twin.mu(twin.latent_pi(twin.features_extractor(x)))), None

        squashed = True
    elif isinstance(policy, TD3Policy):  # DDPG too
        twin = copy.deepcopy(policy.actor).double()

        def head(x: Any) -> tuple[Any, Any]:
            return twin.mu(twin.features_extractor(x)), None  # mu ends with tanh

        squashed = True
    else:
        return None
    twin.set_training_mode(False)
    low = space.low.astype(np.float64)
    span = space.high.astype(np.float64) - low

    def act(obs: Any) -> tuple[np.ndarray, np.ndarray | None]:
        x, _ = policy.obs_to_tensor(obs)
        x = preprocess_obs(x, policy.observation_space, normalize_images=policy.normalize_images)
        with torch.inference_mode():
            mean, std = head(_double(x))
        out = mean.cpu().numpy().astype(np.float64)
        if squashed:  # SB3's unscale_action, in float64
            out = low + 0.5 * (out + 1.0) * span
        return out, None if std is None else std.cpu().numpy().astype(np.float64)

    return act


def _double(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {k: _double(v) for k, v in x.items()}
    return x.double()
