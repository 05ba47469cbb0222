"""Making environments from config and describing them in metadata."""

from __future__ import annotations

import dataclasses
import difflib
import importlib.metadata
import json
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
from gymnasium.envs.registration import EnvSpec

from collector.errors import HarvestError, HarvestWarning, MissingExtraError, UsageError
from collector.policies import locate

__all__ = [
    "apply_wrappers",
    "check_registered_spec",
    "entry_point_name",
    "env_package_version",
    "env_spec_from_json",
    "env_spec_to_json",
    "is_gymnasium_wrapper",
    "make_env",
    "make_vector_env",
    "recorded_spec",
    "register_namespace",
    "require_vector_entry_point",
    "stored_spec_gate",
]


def make_env(
    env_id: str,
    env_kwargs: dict[str, Any] | None = None,
    max_episode_steps: int | None = None,
    wrappers: Sequence[Mapping[str, Any]] = (),
) -> gym.Env:
    """``gym.make``, then ``wrappers`` in order, with one-line errors.

    An id in a namespace Gymnasium does not ship (``ALE/Pong-v5``) first imports the package
    that registers it (``register_namespace``), in this process: Ray workers and sub-env
    processes call this too.

    Raises:
        MissingExtraError: the namespace's (or the env's) package is not installed.
        UsageError: the id is not registered, the env rejects ``env_kwargs``, or a wrapper
            cannot be imported or fails to wrap the env.
    """
    register_namespace(env_id)
    kwargs = dict(env_kwargs or {})
    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = int(max_episode_steps)
    try:
        env = gym.make(env_id, **kwargs)
    except gym.error.DependencyNotInstalled as e:
        raise _missing_dependency(env_id, e) from e
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
    return apply_wrappers(env, wrappers, env_id)


def apply_wrappers(env: gym.Env, wrappers: Sequence[Mapping[str, Any]], env_id: str) -> gym.Env:
    """Wrap ``env`` in each ``{_target_: CLASS, **kwargs}`` of ``wrappers``, in order.

    ``_target_`` is a dotted path imported as a policy's is (a module in the current folder
    too), to a wrapper class or a function ``f(env, **kwargs)`` returning the wrapped env.
    ``env`` is closed when a wrapper fails.

    Raises:
        UsageError: a ``_target_`` that cannot be imported (naming the module's error), is
            not callable, fails to wrap the env (naming the wrapper), or returns no env.
    """
    for i, entry in enumerate(wrappers):
        kwargs = dict(entry)
        target = str(kwargs.pop("_target_", ""))
        try:
            wrapper = _locate_wrapper(i, target)
            try:
                wrapped = wrapper(env, **kwargs)
            except Exception as e:  # the wrapper's own check of the env, or bad arguments
                raise UsageError(
                    f"wrappers[{i}] {target} failed to wrap env {env_id!r} "
                    f"({type(e).__name__}: {_first_line(e)})"
                ) from e
            if not isinstance(wrapped, gym.Env):
                raise UsageError(
                    f"wrappers[{i}]._target_={target!r} is not a Gymnasium wrapper (it returned "
                    f"{type(wrapped).__name__}, not an env)"
                )
        except UsageError:
            env.close()
            raise
        env = wrapped
    return env


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else ""


def _locate_wrapper(i: int, target: str) -> Any:
    """The class (or function) a wrapper's ``_target_`` names, imported as a policy's is."""
    try:
        obj = locate(target)
    except Exception as e:  # the user's module may raise anything while it imports
        raise UsageError(
            f"wrappers[{i}]._target_={target!r} cannot be imported ({type(e).__name__}: "
            f"{_first_line(e)}); check the module path and that its package is installed (or "
            "in the current folder)"
        ) from e
    if not callable(obj):
        raise UsageError(f"wrappers[{i}]._target_={target!r} is not a Gymnasium wrapper")
    return obj


def recorded_spec(env: gym.Env, wrappers: Sequence[Mapping[str, Any]]) -> EnvSpec | None:
    """``env.spec`` with each config wrapper's arguments in its ``WrapperSpec``.

    Gymnasium records a wrapper's arguments only when it subclasses ``RecordConstructorArgs``
    (its own wrappers do); for another, ``gym.make(spec)`` could not rebuild it, so the
    arguments the config gave it are filled in.
    """
    spec = env.spec
    n = len(wrappers)
    if spec is None or not n or len(spec.additional_wrappers) < n:
        return spec
    head, tail = spec.additional_wrappers[:-n], spec.additional_wrappers[-n:]
    filled = tuple(
        w
        if w.kwargs is not None
        else dataclasses.replace(w, kwargs={k: v for k, v in e.items() if k != "_target_"})
        for w, e in zip(tail, wrappers, strict=True)
    )
    return dataclasses.replace(spec, additional_wrappers=head + filled)


#: Env namespaces Gymnasium does not ship: (pip package, module that registers them, and the
#: harvest extra that installs it, if any).
_NAMESPACE_PACKAGES = {
    "ALE": ("ale-py", "ale_py", "atari"),
    "MiniGrid": ("minigrid", "minigrid", None),
    "BabyAI": ("minigrid", "minigrid", None),
    "MiniHack": ("minihack", "minihack", None),
    "MetaWorld": ("metaworld", "metaworld", None),
    "highway": ("highway-env", "highway_env", None),
}


def register_namespace(env_id: str) -> None:
    """Import the package that registers ``env_id``'s namespace, if it is not registered yet.

    ``ALE/Pong-v5`` imports ``ale_py`` (as ``env=ale_py:ALE/Pong-v5`` would). Only the fixed
    table of namespaces here is imported, never a module a dataset names, so
    ``recover_environment`` calls this on stored ids too. A ``module:`` id, or an id already
    registered, is left to ``gym.make``.

    Raises:
        MissingExtraError: the package is not installed (one line naming the pip extra).
        UsageError: the package is installed but fails to import.
    """
    namespace = env_id.split("/")[0] if "/" in env_id and ":" not in env_id else None
    if namespace not in _NAMESPACE_PACKAGES or env_id in gym.registry:
        return
    package, module_name, extra = _NAMESPACE_PACKAGES[namespace]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:  # installed, but one of its own imports is missing
            raise UsageError(
                f"env={env_id!r}: importing {module_name!r} failed (ModuleNotFoundError: "
                f"{_first_line(e)}); reinstall {package}"
            ) from e
        how = f"pip install 'harvest[{extra}]'" if extra else f"pip install {package}"
        raise MissingExtraError(f"env={env_id!r} needs {package}: {how}") from e
    except Exception as e:  # a broken install may raise anything while it imports
        raise UsageError(
            f"env={env_id!r}: importing {module_name!r} failed ({type(e).__name__}: "
            f"{_first_line(e)}); reinstall {package}"
        ) from e
    gym.register_envs(module)


#: Gymnasium envs whose dependencies a harvest extra installs: entry point prefix -> extra.
_ENTRY_POINT_EXTRAS = {"gymnasium.envs.mujoco": "mujoco", "ale_py": "atari"}


def _missing_dependency(env_id: str, e: gym.error.DependencyNotInstalled) -> HarvestError:
    """A ``MissingExtraError`` naming the harvest extra (MuJoCo), else the env's own words."""
    spec = gym.registry.get(env_id)
    entry = entry_point_name(spec.entry_point) if spec is not None else None
    for prefix, extra in _ENTRY_POINT_EXTRAS.items():
        if entry is not None and entry.startswith(prefix):
            return MissingExtraError(
                f"env={env_id!r} needs {extra}: pip install 'harvest[{extra}]'"
            )
    return MissingExtraError(f"env={env_id!r}: {_first_line(e)}")


def _unknown_hint(env_id: str) -> str:
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


def env_spec_from_json(data: dict[str, Any] | str | None) -> EnvSpec | None:
    """The ``EnvSpec`` stored in metadata (``env_spec``/``eval_env_spec``), or None.

    Only parses: making the env from it goes through ``stored_spec_gate`` first.
    """
    if data is None:
        return None
    # specs of older gymnasiums (imported from Minari) may lack additional_wrappers
    text = data if isinstance(data, str) else json.dumps({"additional_wrappers": [], **data})
    return EnvSpec.from_json(text)


def stored_spec_gate(spec: EnvSpec, source: str, trust_remote_code: bool = False) -> None:
    """Ready a spec read from ``source`` for ``gym.make``; refuse code it should not run.

    Its namespace's package is imported (from a fixed table of packages, never one the
    dataset names), and unless ``trust_remote_code`` its code is checked
    (``check_registered_spec``).
    """
    register_namespace(spec.id)
    if not trust_remote_code:
        check_registered_spec(spec, source)


def check_registered_spec(spec: EnvSpec, source: str) -> None:
    """Refuse an env spec read from ``source`` unless Gymnasium's registry already makes it.

    A stored spec names code (its ``entry_point``, ``vector_entry_point`` and wrapper entry
    points) that ``gym.make`` imports and calls: from a dataset that is code the user did not
    name (issue 16 item 2). Only a spec whose id is registered in this process with the same
    entry points, and whose wrappers are all classes of ``gymnasium.wrappers``
    (``is_gymnasium_wrapper`` states the rule), passes. The registry is read directly:
    ``gym.spec`` would import the module of a ``"module:"`` id.

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
    for wrapper in spec.additional_wrappers:
        if not is_gymnasium_wrapper(wrapper.entry_point):
            raise UsageError(
                f"{source}: env {spec.id!r} asks for wrapper entry_point "
                f"{entry_point_name(wrapper.entry_point)!r} ({wrapper.name}); refusing to run "
                f"code the dataset names (only wrapper classes of gymnasium.wrappers are made "
                f"without the opt-in); {how}"
            )


#: Classes of ``gymnasium.wrappers`` that reach beyond the env: RecordVideo writes files where
#: its arguments say, HumanRendering opens a window. A stored spec needs the opt-in for them.
_WRAPPERS_WITH_SIDE_EFFECTS = frozenset({"RecordVideo", "HumanRendering"})


def is_gymnasium_wrapper(entry_point: Any) -> bool:
    """True when a stored wrapper ``entry_point`` names a wrapper class of ``gymnasium.wrappers``.

    The rule for wrappers a dataset's spec may ask for without ``trust_remote_code``: the text
    is ``"MODULE:NAME"``; ``NAME`` is a public name of the ``gymnasium.wrappers`` package (its
    ``__all__``, resolved as an attribute of that package and nowhere else) that is a
    ``gymnasium.Wrapper`` subclass defined in ``MODULE``, and is not one with effects beyond
    the env (``RecordVideo``, ``HumanRendering``). ``MODULE`` is compared, never imported
    here: ``gym.make`` then imports only the module that class already came from. Arguments
    stored with the wrapper are JSON values, so they cannot smuggle in code either.
    """
    if not isinstance(entry_point, str) or entry_point.count(":") != 1:
        return False
    module, name = entry_point.split(":")
    if module != "gymnasium.wrappers" and not module.startswith("gymnasium.wrappers."):
        return False
    package = gym.wrappers
    if name not in getattr(package, "__all__", ()) or name in _WRAPPERS_WITH_SIDE_EFFECTS:
        return False
    try:
        obj = getattr(package, name)  # the package's lazy names import its own submodules
    except Exception:  # an optional dependency (jax, torch) missing
        return False
    return isinstance(obj, type) and issubclass(obj, gym.Wrapper) and obj.__module__ == module


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
    wrappers = tuple(
        w if w.kwargs is None else dataclasses.replace(w, kwargs=_json_safe(w.kwargs))
        for w in spec.additional_wrappers
    )
    warnings.warn(
        f"env spec {spec.id!r} has kwargs that are not JSON; they are stored as repr() strings, "
        "so recover_environment may need them passed again",
        HarvestWarning,
        stacklevel=2,
    )
    safe = dataclasses.replace(spec, kwargs=_json_safe(spec.kwargs), additional_wrappers=wrappers)
    return json.loads(safe.to_json())


def _json_safe(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``kwargs`` with each value that is not JSON replaced by its repr() string."""
    safe = {}
    for key, value in kwargs.items():
        try:
            json.dumps(value, allow_nan=False)
            safe[key] = value
        except (TypeError, ValueError):
            safe[key] = repr(value)
    return safe


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
