"""Making environments from config and describing them in metadata."""

from __future__ import annotations

import dataclasses
import difflib
import importlib.metadata
import json
import warnings
from typing import Any

import gymnasium as gym
from gymnasium.envs.registration import EnvSpec

from collector.errors import HarvestWarning, UsageError

__all__ = [
    "check_registered_spec",
    "entry_point_name",
    "env_package_version",
    "env_spec_to_json",
    "make_env",
    "make_vector_env",
    "require_vector_entry_point",
]


def make_env(
    env_id: str, env_kwargs: dict[str, Any] | None = None, max_episode_steps: int | None = None
) -> gym.Env:
    """``gym.make`` with a one-line error for unknown ids (with close matches).

    Raises:
        UsageError: the id is not registered, or the env rejects ``env_kwargs``.
    """
    kwargs = dict(env_kwargs or {})
    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = int(max_episode_steps)
    try:
        return gym.make(env_id, **kwargs)
    except gym.error.Error as e:
        if env_id not in gym.registry and ":" not in env_id:
            raise UsageError(
                f"env={env_id!r} is not a registered Gymnasium environment{_unknown_hint(env_id)}"
            ) from e
        raise UsageError(f"cannot make env={env_id!r}: {e}") from e
    except ImportError as e:
        # gymnasium re-raises a failed "module:" import without the name: report the cause
        cause = e.__cause__ if isinstance(e.__cause__, ImportError) else e
        module = env_id.split(":")[0] if ":" in env_id else None
        where = f"importing {module!r} failed" if module else "an import failed"
        raise UsageError(
            f"env={env_id!r}: {where} ({type(cause).__name__}: {str(cause).splitlines()[0]}); "
            "install the missing package, or run from the folder that holds the module"
        ) from e
    except TypeError as e:
        raise UsageError(f"env={env_id!r} rejected env_kwargs={kwargs}: {e}") from e


#: Env namespaces Gymnasium does not ship: (pip package, module that registers them).
_NAMESPACE_PACKAGES = {
    "ALE": ("ale-py", "ale_py"),
    "MiniGrid": ("minigrid", "minigrid"),
    "BabyAI": ("minigrid", "minigrid"),
    "MiniHack": ("minihack", "minihack"),
    "MetaWorld": ("metaworld", "metaworld"),
    "highway": ("highway-env", "highway_env"),
    "D4RL": ("minari", "minari"),
}


def _unknown_hint(env_id: str) -> str:
    namespace = env_id.split("/")[0] if "/" in env_id else None
    if namespace in _NAMESPACE_PACKAGES:
        package, module = _NAMESPACE_PACKAGES[namespace]
        return (
            f"; {namespace}/ envs come from {package}: pip install {package}, then use "
            f"env={module}:{env_id} (importing {module} registers them)"
        )
    close = difflib.get_close_matches(env_id, list(gym.registry), n=3)
    return f"; did you mean {', '.join(close)}?" if close else "; see gymnasium.pprint_registry()"


def require_vector_entry_point(env_id: str) -> None:
    """A one-line ``UsageError`` unless the env (made once already) has a vector entry point."""
    spec = gym.spec(env_id.split(":")[-1])  # make_env imported a "module:" prefix already
    if spec.vector_entry_point is None:
        raise UsageError(
            f"env={env_id!r} has no vector_entry_point (a numpy-vectorized implementation); "
            "use vectorization_mode=sync or async"
        )


def make_vector_env(
    env_id: str,
    num_envs: int,
    env_kwargs: dict[str, Any] | None = None,
    max_episode_steps: int | None = None,
) -> gym.vector.VectorEnv:
    """The env's own vectorized implementation (``gym.make_vec``, ``vector_entry_point``).

    Call after ``make_env`` of the same id, which gives the one-line unknown-id errors and
    imports a ``module:`` prefix.

    Raises:
        UsageError: the env has no vector entry point, or rejects ``env_kwargs``.
    """
    require_vector_entry_point(env_id)
    kwargs = dict(env_kwargs or {})
    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = int(max_episode_steps)
    try:
        return gym.make_vec(
            env_id, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs
        )
    except (gym.error.Error, TypeError) as e:
        raise UsageError(f"cannot make env={env_id!r} with vector_entry_point: {e}") from e


def entry_point_name(entry_point: Any) -> str | None:
    """An entry point as ``"module:attr"`` text (a callable's module and qualified name)."""
    if entry_point is None or isinstance(entry_point, str):
        return entry_point
    module = getattr(entry_point, "__module__", None)
    name = getattr(entry_point, "__qualname__", None) or getattr(entry_point, "__name__", None)
    return f"{module}:{name}" if module and name else repr(entry_point)


def check_registered_spec(spec: EnvSpec, source: str) -> None:
    """Refuse an env spec read from ``source`` unless Gymnasium's registry already makes it.

    A stored spec names code (its ``entry_point``, ``vector_entry_point`` and wrapper entry
    points) that ``gym.make`` imports and calls: from a dataset that is code the user did not
    name (issue 16 item 2). Only a spec whose id is registered in this process with the same
    entry points, and no wrappers, passes. The registry is read directly: ``gym.spec`` would
    import the module of a ``"module:"`` id.

    Raises:
        UsageError: one line naming the entry point and the opt-in.
    """
    how = "pass trust_remote_code=True to recover_environment if you trust its code"
    registered = gym.registry.get(spec.id)
    if registered is None:
        raise UsageError(
            f"{source}: env {spec.id!r} is not registered in Gymnasium, so making it would run "
            f"entry_point {entry_point_name(spec.entry_point)!r} named by the dataset; import "
            f"the package that registers {spec.id!r} first, or {how}"
        )
    for field in ("entry_point", "vector_entry_point"):
        stored = entry_point_name(getattr(spec, field))
        known = entry_point_name(getattr(registered, field))
        if stored is not None and stored != known:
            raise UsageError(
                f"{source}: env {spec.id!r} asks for {field} {stored!r}, but Gymnasium has it "
                f"registered with {field} {known!r}; refusing to run code the dataset names; "
                f"{how}"
            )
    if spec.additional_wrappers:  # even Gymnasium's own: RecordVideo writes where it is told
        wrapper = spec.additional_wrappers[0]
        raise UsageError(
            f"{source}: env {spec.id!r} asks for wrapper entry_point "
            f"{entry_point_name(wrapper.entry_point)!r} ({wrapper.name}); refusing to run code "
            f"the dataset names; {how}"
        )


def env_spec_to_json(spec: EnvSpec | None) -> dict[str, Any] | None:
    """``EnvSpec.to_json()`` as a dict; kwargs that are not JSON become repr strings (warned)."""
    if spec is None:
        return None
    # an env registered with a class or function (not "module:name" text) is stored by name,
    # as a string entry point would be; Gymnasium's to_json refuses callables
    spec = dataclasses.replace(
        spec,
        entry_point=entry_point_name(spec.entry_point),
        vector_entry_point=entry_point_name(spec.vector_entry_point),
    )
    try:
        return json.loads(spec.to_json())
    except (TypeError, ValueError, gym.error.Error):
        pass
    safe = {}
    for key, value in spec.kwargs.items():
        try:
            json.dumps(value, allow_nan=False)
            safe[key] = value
        except (TypeError, ValueError):
            safe[key] = repr(value)
    warnings.warn(
        f"env spec {spec.id!r} has kwargs that are not JSON; they are stored as repr() strings, "
        "so recover_environment may need them passed again",
        HarvestWarning,
        stacklevel=2,
    )
    return json.loads(dataclasses.replace(spec, kwargs=safe, additional_wrappers=()).to_json())


def env_package_version(spec: EnvSpec | None) -> str | None:
    """Version of the package that provides the env's entry point (data-affecting)."""
    entry_point = entry_point_name(spec.entry_point) if spec is not None else None
    if entry_point is None:
        return None
    top = entry_point.split(":")[0].split(".")[0]
    try:  # usually the distribution is named like its top-level module (gymnasium, ale_py)
        return f"{top}=={importlib.metadata.version(top)}"
    except importlib.metadata.PackageNotFoundError:
        pass
    # slower: scans every installed distribution's file list
    for dist in importlib.metadata.packages_distributions().get(top, []):
        try:
            return f"{dist}=={importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return None
