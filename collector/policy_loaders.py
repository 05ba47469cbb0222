"""Trained agents as collection policies: Stable-Baselines3 zips and PyTorch modules.

``policy=sb3`` (``SB3Policy``) and ``policy=torch`` (``TorchPolicy``) follow the policy
contract of DESIGN.md section 5: ``reset(seed)`` starts an episode's own numpy stream and an
action depends only on the observation and that stream (torch's global RNG is never used).
Both run one forward pass for a whole batch of observations:

- ``act(obs)``: one observation (a batch of one), the stream of ``reset``;
- ``act_batch(obs, n)``: ``n`` rows sharing the stream of ``reset`` (``vector_entry_point``,
  whose episodes depend on ``num_envs`` anyway);
- ``reset_row(row, seed)`` / ``act_rows(obs, n)``: ``n`` rows, row ``i`` drawing from its own
  stream started by ``reset_row(i, seed)``. Sync/async vector collection uses these: one
  forward pass per vector step, and episode ``i``'s actions are those ``reset(seed); act``
  would choose.

With ``deterministic=true`` (the default) a Discrete action is the argmax of the logits and a
Box action the mean clipped to the bounds; with ``false`` the action is sampled from the
policy's distribution with the episode's stream. Batched float math: a float32 matrix product
of ``n`` rows may round a row's last bit differently than one of a single row. Discrete
actions (argmax or sampled) only change at exact near-ties, so their fingerprints match
whatever ``num_envs``; ``TorchPolicy`` computes Box policies in float64 (``dtype=auto``), whose
differences vanish when the action is cast to the space's float32. ``SB3Policy`` does the same
for the actors of PPO/A2C/SAC/TD3/DDPG (``collector.sb3_float64``); other SB3 Box policies (gSDE,
custom classes) run in SB3's float32 (``dtype`` in provenance): their fingerprint matches across
runners and workers for the same ``num_envs`` but may differ between widths.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import json
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
from gymnasium import spaces

from collector.errors import UsageError
from collector.sb3_float64 import float64_actor

__all__ = ["SB3Policy", "TorchPolicy", "resolve_device"]

#: ``policy.algo`` short names, as Stable-Baselines3 exports them.
SB3_ALGOS = ("A2C", "DDPG", "DQN", "PPO", "SAC", "TD3")


def _need(module: str, config: str, package: str, extra: str) -> Any:
    """Import ``module`` or raise the one-line missing-extra error."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise UsageError(f"policy={config} needs {package}: pip install 'harvest[{extra}]'") from e


def _torch(config: str = "torch") -> Any:
    return _need("torch", config, "torch", "torch")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def resolve_device(device: str, config: str = "torch") -> str:
    """``auto`` is ``cuda`` when torch sees a GPU, else ``cpu``; others are checked.

    Raises:
        UsageError: ``cuda`` asked for but not available, or an unknown device.
    """
    torch = _torch(config)
    device = str(device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise UsageError(f"policy.device={device!r} is not a device; use auto, cpu or cuda") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(
            f"policy.device={device!r} but torch sees no CUDA GPU; use policy.device=auto or cpu"
        )
    return device


class _ActionHead:
    """Turns a forward pass's output into actions: the action half of the adapter.

    Discrete: ``logits`` of shape (n, k) -> argmax, or a sample of softmax(logits).
    Box: ``mean`` of shape (n, *shape) (and ``std`` to sample) -> clipped to the bounds.
    Each row draws from ``rngs[i]`` (the same generator may repeat: a shared stream).
    """

    def __init__(self, action_space: spaces.Space, deterministic: bool, config: str) -> None:
        self.space = action_space
        self.deterministic = deterministic
        if isinstance(action_space, spaces.Discrete):
            self.kind = "discrete"
        elif isinstance(action_space, spaces.Box):
            self.kind = "box"
            self.low = action_space.low.astype(np.float64)
            self.high = action_space.high.astype(np.float64)
        else:
            raise UsageError(
                f"policy={config} supports Discrete and Box action spaces, not {action_space}"
            )

    def discrete(self, logits: np.ndarray, rngs: Sequence[np.random.Generator]) -> np.ndarray:
        space = self.space
        logits = np.asarray(logits, np.float64).reshape(len(rngs), -1)
        if logits.shape[1] != int(space.n):
            raise UsageError(
                f"the policy's output has {logits.shape[1]} logits per row, the action space "
                f"{space} needs {int(space.n)}"
            )
        if self.deterministic:
            idx = logits.argmax(axis=1)
        else:
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            cdf = np.cumsum(p, axis=1)
            u = np.array([rng.random() for rng in rngs]) * cdf[:, -1]
            idx = np.minimum((cdf <= u[:, None]).sum(axis=1), logits.shape[1] - 1)
        return (space.start + idx).astype(space.dtype)

    def box(
        self, mean: np.ndarray, std: np.ndarray | None, rngs: Sequence[np.random.Generator]
    ) -> np.ndarray:
        shape = self.space.shape
        mean = np.asarray(mean, np.float64).reshape(len(rngs), *shape)
        if not self.deterministic:
            if std is None:
                raise UsageError(
                    "policy.deterministic=false needs the module to return (mean, log_std) for a "
                    "Box action space; return both or set policy.deterministic=true"
                )
            noise = np.stack([rng.standard_normal(shape) for rng in rngs])
            mean = mean + np.broadcast_to(np.asarray(std, np.float64), mean.shape) * noise
        return np.clip(mean, self.low, self.high).astype(self.space.dtype)


class _Streams(Sequence):
    """Per-row random streams, each made from its seed when first drawn from.

    A deterministic policy never draws, so starting an episode costs it no ``Generator``
    (one per episode showed in the vector benchmark, episodes being a few steps: issue 20).
    A row never reset draws from seed 0.
    """

    __slots__ = ("_rngs", "_seeds")

    def __init__(self) -> None:
        self._seeds: list[int | None] = []
        self._rngs: list[np.random.Generator | None] = []

    def reset(self, row: int, seed: int | None) -> None:
        """Row ``row`` draws from ``default_rng(seed)`` from now on (rows grow as needed)."""
        while len(self._seeds) <= row:
            self._seeds.append(0)
            self._rngs.append(None)
        self._seeds[row] = seed
        self._rngs[row] = None

    def __len__(self) -> int:
        return len(self._seeds)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        rng = self._rngs[i]
        if rng is None:
            rng = self._rngs[i] = np.random.default_rng(self._seeds[i])
        return rng


class _BatchedPolicy:
    """The stream bookkeeping shared by the loaders; subclasses give ``_actions``."""

    def __init__(self) -> None:
        self._one = _Streams()  # the stream of act and act_batch
        self._one.reset(0, 0)
        self._rows = _Streams()

    def _actions(self, obs: Any, rngs: Sequence[np.random.Generator]) -> np.ndarray:
        raise NotImplementedError

    def reset(self, seed: int | None) -> None:
        """Start an episode: reseed the stream of ``act`` and ``act_batch``."""
        self._one.reset(0, seed)

    def act(self, obs: Any) -> Any:
        """The action for one observation."""
        return self._actions(_batch_of_one(obs), self._one)[0]

    def act_batch(self, obs: Any, n: int) -> np.ndarray:
        """``n`` actions for ``n`` observations (rows), one forward pass, one shared stream."""
        return self._actions(obs, [self._one[0]] * n)

    def reset_row(self, row: int, seed: int | None) -> None:
        """Start an episode in row ``row`` of ``act_rows``, with its own stream."""
        self._rows.reset(row, seed)

    def act_rows(self, obs: Any, n: int) -> np.ndarray:
        """``n`` actions, one forward pass; row ``i`` draws from its ``reset_row`` stream."""
        rows = self._rows
        if len(rows) < n:
            rows.reset(n - 1, 0)
        return self._actions(obs, rows if len(rows) == n else rows[:n])


def _batch_of_one(obs: Any) -> Any:
    """``obs`` as a batch of one row (a dict observation: each entry)."""
    if isinstance(obs, Mapping):
        return {k: _batch_of_one(v) for k, v in obs.items()}
    return np.asarray(obs)[None]


class TorchPolicy(_BatchedPolicy):
    """A PyTorch policy: a TorchScript / ``torch.export`` file, or a module plus a state_dict.

    The module maps a batch of observations (Box as they are, Discrete one-hot; float32, or
    float64 with ``dtype``) to the logits of a Discrete action space, or to the mean (or
    ``(mean, log_std)``) of a Box one. ``method`` calls another attribute than ``forward``
    (``actor`` for a CleanRL PPO agent, ``actor_mean`` for its continuous version).

    Args:
        path: a TorchScript (``torch.jit.save``) or ``torch.export.save`` file.
        module: instead of ``path``, ``{_target_: pkg.Net, **kwargs}`` naming an ``nn.Module``
            class; it gets ``observation_space``/``action_space`` (or CleanRL's ``envs``) when
            its constructor takes them.
        state_dict: the checkpoint ``module`` loads, read with ``torch.load(weights_only=True)``
            (tensors only: no pickled code runs).
        device: ``auto`` (``cuda`` if available, else ``cpu``), ``cpu`` or ``cuda[:i]``.
        deterministic: argmax / mean, or sample with the episode's stream.
        method: the module's attribute to call instead of ``forward``.
        dtype: ``float32``, ``float64`` or ``auto`` (float64 for a Box action space, else
            float32). In float64 a row's result does not depend on the batch's size in
            practice (its rounding differences vanish when the action is cast to float32), so
            Box datasets keep the same fingerprint whatever ``num_envs``; not for
            ``torch.export`` files, which stay float32.

    Raises:
        UsageError: torch missing, a bad combination of keys, a file that does not load.
    """

    def __init__(
        self,
        action_space: spaces.Space,
        observation_space: spaces.Space,
        path: str | None = None,
        module: Mapping[str, Any] | None = None,
        state_dict: str | None = None,
        device: str = "auto",
        deterministic: bool = True,
        method: str | None = None,
        dtype: str = "auto",
    ) -> None:
        super().__init__()
        torch = _torch()
        self.device = resolve_device(device)
        self.deterministic = bool(deterministic)
        self._head = _ActionHead(action_space, self.deterministic, "torch")
        self._obs = _ObsAdapter(observation_space)
        _resolve_dtype(str(dtype), action_space, "")  # a bad value fails before any loading
        if (path is None) == (module is None):
            raise UsageError(
                "policy=torch needs policy.path (a TorchScript or torch.export file) or "
                "policy.module with policy.state_dict, not both and not neither"
            )
        if path is not None:
            if state_dict is not None:
                raise UsageError("policy.state_dict goes with policy.module, not policy.path")
            net, self.source = _load_program(torch, str(path), self.device)
        else:
            if state_dict is None:
                raise UsageError(
                    "policy.module needs policy.state_dict, the checkpoint file its weights are in"
                )
            net = _build_module(torch, module, action_space, observation_space)
            _load_weights(torch, net, str(state_dict), self.device)
            self.source = "state_dict"
        if self.source != "torch.export":  # an exported program has no train/eval modes
            net.eval()
        self.dtype = _resolve_dtype(str(dtype), action_space, self.source)
        if self.dtype == "float64":
            net.double()
        self._tensor_dtype = getattr(torch, self.dtype)
        self._call = getattr(net, str(method), None) if method else net
        if not callable(self._call):
            raise UsageError(
                f"policy.method={method!r}: the module has no such method; give the name of the "
                "attribute that maps observations to logits or means (e.g. actor), or null"
            )
        self._torch = torch

    def _actions(self, obs: Any, rngs: Sequence[np.random.Generator]) -> np.ndarray:
        torch = self._torch
        x = torch.as_tensor(self._obs(obs, len(rngs)), dtype=self._tensor_dtype, device=self.device)
        with torch.inference_mode():
            out = self._call(x)
        if isinstance(out, (tuple, list)):
            mean = _numpy(out[0])
            std = None if len(out) < 2 else np.exp(_numpy(out[1]))
        else:
            mean, std = _numpy(out), None
        if self._head.kind == "discrete":
            return self._head.discrete(mean, rngs)
        return self._head.box(mean, std, rngs)

    def provenance(self) -> dict[str, Any]:
        """Library versions, device and how the model was loaded."""
        return {
            "loader": "torch",
            "source": self.source,
            "dtype": self.dtype,
            "device": self.device,
            "deterministic": self.deterministic,
            "torch": _version("torch"),
        }


def _resolve_dtype(dtype: str, action_space: spaces.Space, source: str) -> str:
    """The compute dtype ``policy.dtype`` asks for (see ``TorchPolicy``)."""
    if dtype not in ("auto", "float32", "float64"):
        raise UsageError(f"policy.dtype={dtype!r} must be auto, float32 or float64")
    if source == "torch.export":
        if dtype == "float64":
            raise UsageError(
                "policy.dtype=float64 is not possible for a torch.export file (its dtypes are "
                "fixed when exported); use float32 or auto"
            )
        return "float32"
    if dtype == "auto":
        return "float64" if isinstance(action_space, spaces.Box) else "float32"
    return dtype


def _numpy(t: Any) -> np.ndarray:
    """A float64 numpy copy of a tensor (an exported program's output may require grad)."""
    return t.detach().cpu().numpy().astype(np.float64)


class _ObsAdapter:
    """The observation half of the adapter: a batch of observations as a float32 array."""

    def __init__(self, space: spaces.Space) -> None:
        if isinstance(space, spaces.Discrete):
            self.kind, self.n, self.start = "onehot", int(space.n), int(space.start)
        elif isinstance(space, spaces.Box):
            self.kind, self.shape = "box", space.shape
        else:
            raise UsageError(
                f"policy=torch supports Box and Discrete observation spaces, not {space}; "
                "flatten it (wrappers=[{_target_: gymnasium.wrappers.FlattenObservation}])"
            )

    def __call__(self, obs: Any, n: int) -> np.ndarray:
        if self.kind == "onehot":
            out = np.zeros((n, self.n), np.float32)
            out[np.arange(n), np.asarray(obs, np.int64).reshape(n) - self.start] = 1.0
            return out
        return np.asarray(obs, np.float32).reshape(n, *self.shape)


def _load_program(torch: Any, path: str, device: str) -> tuple[Any, str]:
    """A TorchScript or ``torch.export`` file as a callable module, on ``device``.

    Told apart by their zip members (``torch.export.save`` writes ``archive_format``,
    ``torch.jit.save`` a ``code/`` folder), so neither loader is tried on the other's file.
    """
    _check_file(path, "policy.path")
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (OSError, zipfile.BadZipFile):
        names = []
    kind = (
        "torch.export"
        if any(n.endswith("archive_format") for n in names)
        else "torchscript"
        if any("/code/" in n for n in names)
        else None
    )
    try:
        if kind == "torch.export":
            program = torch.export.load(path)
            if device != "cpu":
                program = torch.export.passes.move_to_device_pass(program, device)
            return program.module(), kind
        if kind == "torchscript":
            with warnings.catch_warnings():  # deprecated in torch 2.10+, still what users have
                warnings.simplefilter("ignore", DeprecationWarning)
                return torch.jit.load(path, map_location=device), kind
    except Exception as e:
        raise UsageError(
            f"policy.path={path!r} did not load as a {kind} file ({type(e).__name__}: "
            f"{_first_line(e)})"
        ) from e
    raise UsageError(
        f"policy.path={path!r} is neither a TorchScript nor a torch.export file; for a "
        "state_dict use policy.module and policy.state_dict"
    )


def _build_module(
    torch: Any, module: Mapping[str, Any], action_space: spaces.Space, obs_space: spaces.Space
) -> Any:
    """Instantiate ``module`` (a ``_target_`` config) as CleanRL and friends expect."""
    from collector.policies import import_failure, locate

    if not isinstance(module, Mapping) or not module.get("_target_"):
        raise UsageError("policy.module must be a mapping with a _target_ (an nn.Module class)")
    kwargs = {k: v for k, v in module.items() if k != "_target_"}
    target = str(module["_target_"])
    try:
        cls = locate(target)
    except Exception as e:
        raise UsageError(
            f"policy.module._target_={target!r} cannot be imported ({import_failure(e, target)})"
        ) from e
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        params = {}
    given = {
        "observation_space": obs_space,
        "action_space": action_space,
        "envs": SimpleNamespace(  # CleanRL's agents read the vector env's single_* spaces
            single_observation_space=obs_space,
            single_action_space=action_space,
            observation_space=obs_space,
            action_space=action_space,
        ),
    }
    kwargs = {**{k: v for k, v in given.items() if k in params}, **kwargs}
    try:
        net = cls(**kwargs)
    except Exception as e:
        raise UsageError(
            f"policy.module._target_={target!r} failed to build ({type(e).__name__}: "
            f"{_first_line(e)})"
        ) from e
    if not isinstance(net, torch.nn.Module):
        raise UsageError(f"policy.module._target_={target!r} is not a torch.nn.Module")
    return net


def _load_weights(torch: Any, net: Any, path: str, device: str) -> None:
    """Load ``path`` (tensors only, ``weights_only=True``) into ``net`` on ``device``."""
    _check_file(path, "policy.state_dict")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:
        raise UsageError(
            f"policy.state_dict={path!r} is not a tensors-only checkpoint ({type(e).__name__}: "
            f"{_first_line(e)}); save it with torch.save(module.state_dict(), path)"
        ) from e
    if (
        isinstance(state, Mapping)
        and "state_dict" in state
        and isinstance(state["state_dict"], Mapping)
    ):
        state = state["state_dict"]
    try:
        net.load_state_dict(state)
    except Exception as e:
        raise UsageError(
            f"policy.state_dict={path!r} does not fit policy.module ({type(e).__name__}: "
            f"{_first_line(e)})"
        ) from e
    net.to(device)


def _check_file(path: str, key: str) -> None:
    import os

    if not os.path.isfile(path):
        raise UsageError(f"{key}={path!r} is not a file; give the checkpoint's path")


def _first_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= 200 else text[:197] + "..."


class SB3Policy(_BatchedPolicy):
    """A Stable-Baselines3 ``model.zip`` as a collection policy.

    Trust: an SB3 zip keeps parts of its ``data`` file (the policy class, spaces, schedules)
    as cloudpickle, which SB3 unpickles when it loads: loading a zip can run code from it.
    Load only checkpoints you trust (as SB3's own docs warn); its tensors are read with
    ``torch.load(weights_only=True)``. The algorithm is read from the zip without
    unpickling (the policy class's module; PPO versus A2C from PPO's ``clip_range``).

    Args:
        path: the ``model.zip``.
        algo: ``PPO``, ``A2C``, ``DQN``, ``SAC``, ``TD3``, ``DDPG`` or a dotted class path
            (``sb3_contrib.TQC``); null: read from the zip.
        deterministic: the policy's deterministic action (SB3's ``predict``), or a sample
            from its distribution with the episode's stream (PPO/A2C: Discrete or Box).
        device: ``cpu``, ``cuda`` or ``auto``.
        dtype: ``auto`` (float64 for the Box actors of PPO/A2C/SAC/TD3/DDPG, so the actions
            do not depend on ``num_envs``; SB3's float32 otherwise), ``float64`` (refused
            for a policy it cannot copy) or ``float32`` (SB3's own ``predict``).

    Raises:
        UsageError: stable-baselines3 missing, an unknown algorithm, spaces that do not fit.
    """

    def __init__(
        self,
        action_space: spaces.Space,
        observation_space: spaces.Space,
        path: str,
        algo: str | None = None,
        deterministic: bool = True,
        device: str = "cpu",
        dtype: str = "auto",
    ) -> None:
        super().__init__()
        dtype = str(dtype)
        if dtype not in ("auto", "float32", "float64"):
            raise UsageError(f"policy.dtype={dtype!r} must be auto, float32 or float64")
        sb3 = _need("stable_baselines3", "sb3", "stable-baselines3", "sb3")
        path = str(path)
        _check_file(path, "policy.path")
        self.device = resolve_device(device, "sb3")
        self.deterministic = bool(deterministic)
        self.algo = str(algo) if algo else sb3_algo(path)
        cls = self._algo_class(sb3, self.algo)
        try:
            self.model = cls.load(path, device=self.device)
        except Exception as e:
            raise UsageError(
                f"policy.path={path!r} did not load as {self.algo} ({type(e).__name__}: "
                f"{_first_line(e)}); check the file, or set policy.algo"
            ) from e
        _check_spaces(self.model, observation_space, action_space)
        self._head = _ActionHead(action_space, self.deterministic, "sb3")
        self._sample = None if self.deterministic else _sampler(self.model, self.algo)
        self._float64 = None if dtype == "float32" else float64_actor(self.model.policy)
        if dtype == "float64" and self._float64 is None:
            raise UsageError(
                f"policy.dtype=float64: this {self.algo} policy ({type(self.model.policy).__name__}"
                f", {action_space}) has no float64 actor here (Box actions of PPO/A2C/SAC/TD3/"
                "DDPG without gSDE); use policy.dtype=auto or float32"
            )
        self.dtype = "float32" if self._float64 is None else "float64"

    @staticmethod
    def _algo_class(sb3: Any, algo: str) -> Any:
        from collector.policies import import_failure, locate

        if algo.upper() in SB3_ALGOS:
            return getattr(sb3, algo.upper())
        if "." not in algo:
            raise UsageError(
                f"policy.algo={algo!r} is not one of {', '.join(SB3_ALGOS)} nor a dotted class "
                "path (e.g. sb3_contrib.TQC)"
            )
        try:
            return locate(algo)
        except Exception as e:
            raise UsageError(
                f"policy.algo={algo!r} cannot be imported ({import_failure(e, algo)})"
            ) from e

    def _actions(self, obs: Any, rngs: Sequence[np.random.Generator]) -> np.ndarray:
        if not isinstance(obs, Mapping):  # SB3's MultiInputPolicy takes dicts as they are
            obs = np.asarray(obs)
        if self._float64 is not None:
            mean, std = self._float64(obs)
            return self._head.box(mean, std, rngs)  # std is only used to sample
        if self._sample is None:
            actions, _ = self.model.predict(obs, deterministic=True)
            return np.asarray(actions).astype(self._head.space.dtype, copy=False)
        return self._sample(self._head, obs, rngs)

    def provenance(self) -> dict[str, Any]:
        """Library versions, algorithm, device."""
        return {
            "loader": "sb3",
            "algo": self.algo,
            "device": self.device,
            "deterministic": self.deterministic,
            "dtype": self.dtype,
            "stable_baselines3": _version("stable-baselines3"),
            "torch": _version("torch"),
        }


def sb3_algo(path: str) -> str:
    """The algorithm of an SB3 ``model.zip``, read from its ``data`` JSON without unpickling.

    Raises:
        UsageError: not an SB3 zip, or an algorithm it cannot tell (set ``policy.algo``).
    """
    try:
        with zipfile.ZipFile(path) as z:
            data = json.loads(z.read("data"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise UsageError(
            f"policy.path={path!r} is not a Stable-Baselines3 zip (no readable 'data': "
            f"{type(e).__name__}); give a model.zip saved by model.save()"
        ) from e
    cls = data.get("policy_class") if isinstance(data, dict) else None
    module = cls.get("__module__") if isinstance(cls, dict) else None
    by_module = {
        "stable_baselines3.dqn.policies": "DQN",
        "stable_baselines3.sac.policies": "SAC",
        "stable_baselines3.td3.policies": "TD3",
    }
    if module in by_module:
        return by_module[module]
    if module == "stable_baselines3.common.policies":
        return "PPO" if "clip_range" in data else "A2C"
    raise UsageError(
        f"policy.path={path!r}: cannot tell the algorithm (policy class from {module!r}); "
        f"set policy.algo to one of {', '.join(SB3_ALGOS)} or a dotted class path"
    )


def _check_spaces(model: Any, observation_space: spaces.Space, action_space: spaces.Space) -> None:
    for role, theirs, ours in (
        ("observation", model.observation_space, observation_space),
        ("action", model.action_space, action_space),
    ):
        if (
            type(theirs) is not type(ours)
            or getattr(theirs, "shape", None) != getattr(ours, "shape", None)
            or (isinstance(ours, spaces.Discrete) and int(theirs.n) != int(ours.n))
        ):
            raise UsageError(
                f"policy.path: the model was trained with {role} space {theirs}, the env has "
                f"{ours}; use the env (and wrappers) it was trained on"
            )


def _sampler(model: Any, algo: str) -> Any:
    """``f(head, obs, rngs)`` sampling the model's action distribution with numpy streams."""
    from stable_baselines3.common.distributions import (
        CategoricalDistribution,
        DiagGaussianDistribution,
    )
    from stable_baselines3.common.policies import ActorCriticPolicy

    policy = model.policy
    if isinstance(policy, ActorCriticPolicy) and isinstance(
        policy.action_dist, (CategoricalDistribution, DiagGaussianDistribution)
    ):
        import torch

        def sample(head: _ActionHead, obs: np.ndarray, rngs: Sequence[np.random.Generator]) -> Any:
            x, _ = policy.obs_to_tensor(obs)
            with torch.inference_mode():
                dist = policy.get_distribution(x).distribution
                if head.kind == "discrete":
                    return head.discrete(dist.logits.cpu().numpy(), rngs)
                return head.box(dist.mean.cpu().numpy(), dist.stddev.cpu().numpy(), rngs)

        return sample
    if algo == "DQN":

        def epsilon_greedy(
            head: _ActionHead, obs: np.ndarray, rngs: Sequence[np.random.Generator]
        ) -> Any:
            greedy, _ = model.predict(obs, deterministic=True)
            greedy = np.asarray(greedy).reshape(len(rngs))
            out = greedy.copy()
            n = int(head.space.n)
            for i, rng in enumerate(rngs):  # SB3's own rule: random with exploration_rate
                if rng.random() < model.exploration_rate:
                    out[i] = head.space.start + int(rng.integers(n))
            return out.astype(head.space.dtype)

        return epsilon_greedy
    dist = getattr(policy, "action_dist", policy)
    raise UsageError(
        f"policy.deterministic=false is supported for PPO/A2C (Discrete, Box) and DQN, not "
        f"{algo} with {type(dist).__name__}; set policy.deterministic=true"
    )
