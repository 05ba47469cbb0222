"""Recipes: declarative curation checked into a repo, run by ``curate recipe=NAME``.

A recipe (``conf/recipe/NAME.yaml``, composed by Hydra under the key ``recipe``) names
``sources`` (alias: dataset id), an ordered list of ``steps`` over named selections, and the
``outputs`` to write (selection name: dataset id, or ``{id, metadata}``)::

    sources: {random: cartpole/random-v0, heuristic: cartpole/heuristic-v0}
    steps:
      - combine: {inputs: [random, heuristic], into: mix}
      - filter: "return >= 20"                 # or {where: ..., in: [names]}
      - split: {sizes: [0.8, 0.1, 0.1], names: [train, val, test], seed: 0}
    outputs: {train: cartpole/mix-train-v0, val: cartpole/mix-val-v0}
    push: {remote: hf://my-org, outputs: [train, val]}   # optional; or push: true / push: URI

Steps: ``combine`` (``inputs``, ``into``), ``filter`` (``where``, ``in``), ``split``
(``sizes``, ``names``, ``seed``, ``input``), ``subsample`` (``n`` or ``fraction``, ``seed``,
``in``) and ``rename`` (``{old: new}``). Every step works on views, so the whole recipe is
planned, with episode counts per step, before anything is written: a missing dataset, an
unknown step, a bad expression, incompatible sources or an output id that already exists
fail before the first write. ``dry_run`` stops after the plan. ``push`` publishes outputs
after they are written (all of them unless ``outputs`` says which) to the remote given by the
command line (``remote=``), else the recipe's ``push.remote``, else ``$HARVEST_REMOTE``.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from collector import storage
from collector.errors import DatasetExistsError, HarvestError, UsageError
from collector.yaml_limits import MAX_YAML_BYTES, MAX_YAML_DEPTH
from curation.api import load_dataset
from curation.dataset import Dataset
from curation.ops import split_sizes
from curation.remotes import Remote, open_remote
from curation.write import compare_datasets, write_views

__all__ = ["STEP_KINDS", "RecipeResult", "Selection", "check_recipe_syntax", "run_recipe"]

STEP_KINDS = ("combine", "filter", "split", "subsample", "rename")
_RECIPE_KEYS = ("description", "seed", "sources", "steps", "outputs", "push")
_PUSH_KEYS = ("remote", "outputs", "overwrite")
_STEP_PARAMS = {
    "combine": ("inputs", "into"),
    "filter": ("where", "in"),
    "split": ("sizes", "names", "seed", "input"),
    "subsample": ("n", "fraction", "seed", "in"),
}


@dataclass
class Selection:
    """Episodes picked so far: views of one or more datasets, in order (combined lazily)."""

    parts: list[Dataset]

    @property
    def total_episodes(self) -> int:
        """Episodes over all parts."""
        return sum(p.total_episodes for p in self.parts)

    @property
    def total_steps(self) -> int:
        """Steps over all parts."""
        return sum(p.total_steps for p in self.parts)

    def count(self) -> str:
        """``"N episodes, M steps"``."""
        return f"{self.total_episodes:,} episodes, {self.total_steps:,} steps"

    def pick(self, order: np.ndarray, step: dict[str, Any]) -> Selection:
        """The episodes at global positions ``order`` (over the parts in turn), as views."""
        sizes = np.cumsum([0, *(p.total_episodes for p in self.parts)])
        out = []
        for k, part in enumerate(self.parts):
            local = order[(order >= sizes[k]) & (order < sizes[k + 1])] - sizes[k]
            if len(local):
                out.append(part.view(part.episode_indices[local], step))
        return Selection(out)


@dataclass
class RecipeResult:
    """What a recipe did (or, on a dry run, would do)."""

    name: str
    dry_run: bool
    plan: list[str] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)
    pushed: list[str] = field(default_factory=list)

    def render(self) -> str:
        """The plan and outputs as printed by ``curate recipe``."""
        done = f"wrote {len(self.outputs)} dataset(s)"
        if self.pushed:
            done += "\n" + "\n".join(self.pushed)
        tail = "dry run: nothing written" if self.dry_run else done
        return "\n".join([f"recipe {self.name}:", *(f"  {line}" for line in self.plan), tail])


def check_recipe_syntax(path: Path, name: str) -> None:
    """Refuse a recipe file that is not valid YAML, in one line naming file, line and column.

    Hydra's loader would raise it as a long traceback (issue 16 item 21). Only the parser's
    events are produced, so aliases are not expanded here.

    Raises:
        UsageError: ``recipe NAME: FILE:LINE:COLUMN: YAML syntax error: ...; fix the file``.
    """
    if Path(path).stat().st_size > MAX_YAML_BYTES:
        return  # the bounded loader refuses it in one line; do not parse it here
    depth = 0
    try:
        for event in yaml.parse(Path(path).read_text(encoding="utf-8"), Loader=yaml.SafeLoader):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_YAML_DEPTH:
                    return  # PyYAML's scanner is quadratic in depth; the loader refuses it
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        at = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = " ".join(str(e.problem or e.context or "invalid YAML").split())
        raise _fail(name, "", f"{at}: YAML syntax error: {problem}; fix the file") from e
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        detail = " ".join(str(e).split())
        raise _fail(name, "", f"{path}: not valid YAML ({detail}); fix the file") from e


def _fail(name: str, where: str, message: str) -> UsageError:
    return UsageError(f"recipe {name}: {where + ': ' if where else ''}{message}")


def _unknown(kind: str, name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown {kind} {name!r}; {hint}(known: {', '.join(known)})"


def _as_list(value: Any) -> list[Any]:
    return [value] if isinstance(value, str | int | float) else list(value)


@contextlib.contextmanager
def _bad_values(name: str, where: str) -> Iterator[None]:
    """A value of the wrong type or form (``sizes: abc``) as one ``UsageError`` line."""
    try:
        yield
    except HarvestError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as e:
        detail = " ".join(str(e).split()) or type(e).__name__
        raise _fail(name, where, f"a value has the wrong type or form ({detail})") from e


class _Planner:
    """Runs the steps on views, recording one plan line per step."""

    def __init__(self, name: str, root: str | Path | None) -> None:
        self.name = name
        self.root = root
        self.selections: dict[str, Selection] = {}
        self.plan: list[str] = []

    def names(self, where: str, value: Any, default_all: bool) -> list[str]:
        if value is None:
            if default_all or len(self.selections) == 1:
                return list(self.selections)
            raise _fail(
                self.name,
                where,
                f"several selections exist ({', '.join(self.selections)}); say which one",
            )
        names = [str(v) for v in _as_list(value)]
        for n in names:
            if n not in self.selections:
                raise _fail(self.name, where, _unknown("selection", n, list(self.selections)))
        return names

    def sources(self, sources: Any) -> None:
        if not isinstance(sources, Mapping) or not sources:
            raise _fail(
                self.name, "sources", "give a mapping of names to dataset ids, e.g. {a: ns/a-v0}"
            )
        for alias, spec in sources.items():
            dataset_id = spec.get("id") if isinstance(spec, Mapping) else spec
            if not isinstance(dataset_id, str):
                raise _fail(self.name, f"source {alias!r}", "needs a dataset id")
            ds = load_dataset(dataset_id, root=self.root)
            self.selections[str(alias)] = Selection([ds])
            self.plan.append(f"source {alias}: {dataset_id} ({Selection([ds]).count()})")

    def step(self, i: int, raw: Any) -> None:
        where = f"step {i}"
        if not isinstance(raw, Mapping) or len(raw) != 1:
            raise _fail(self.name, where, f"write each step as one '- KIND: PARAMS' item ({raw!r})")
        ((kind, params),) = raw.items()
        if kind not in STEP_KINDS:
            raise _fail(self.name, where, _unknown("step", str(kind), STEP_KINDS))
        where = f"step {i} ({kind})"
        if kind == "rename":
            if not isinstance(params, Mapping):
                raise _fail(self.name, where, "give {old_name: new_name}")
            params = dict(params)
        elif isinstance(params, Mapping):
            params = dict(params)
            for key in params:
                if key not in _STEP_PARAMS[kind]:
                    raise _fail(
                        self.name, where, _unknown("parameter", str(key), _STEP_PARAMS[kind])
                    )
        else:  # the short forms: combine: [a, b]; filter: EXPR; split: [sizes]
            short = {"combine": "inputs", "filter": "where", "split": "sizes", "subsample": "n"}
            params = {short[kind]: params}
        with _bad_values(self.name, where):
            getattr(self, f"_{kind}")(where, params)

    def _combine(self, where: str, p: dict[str, Any]) -> None:
        names = self.names(where, p.get("inputs"), default_all=True)
        parts = [part for n in names for part in self.selections[n].parts]
        problems = compare_datasets(parts)
        if problems:
            raise _fail(
                self.name, where, f"{', '.join(names)} cannot be combined: " + "; ".join(problems)
            )
        into = str(p.get("into") or "combined")
        for n in names:
            del self.selections[n]
        self.selections[into] = Selection(parts)
        self.plan.append(f"combine {' + '.join(names)} -> {into}: {self.selections[into].count()}")

    def _filter(self, where: str, p: dict[str, Any]) -> None:
        text = p.get("where")
        if not isinstance(text, str):
            raise _fail(self.name, where, "needs an expression, e.g. filter: 'return >= 200'")
        names = self.names(where, p.get("in"), default_all=True)
        for n in names:
            sel = self.selections[n]
            kept = [part.filter_episodes(text) for part in sel.parts]
            self.selections[n] = Selection([k for k in kept if k.total_episodes] or kept[:1])
            self.plan.append(f'filter "{text}" on {n}: {self.selections[n].count()}')

    def _split(self, where: str, p: dict[str, Any]) -> None:
        (name,) = self.names(where, p.get("input"), default_all=False)
        sel = self.selections[name]
        sizes = [float(s) if isinstance(s, float) else int(s) for s in _as_list(p.get("sizes"))]
        counts = split_sizes(sizes, sel.total_episodes)
        names = [str(n) for n in _as_list(p.get("names") or [])] or [
            f"{name}_{k}" for k in range(len(sizes))
        ]
        if len(names) != len(sizes) or len(set(names)) != len(names):
            raise _fail(self.name, where, f"give one distinct name per size ({names} for {sizes})")
        seed = p.get("seed")
        order = np.random.default_rng(seed).permutation(sel.total_episodes)
        del self.selections[name]
        at, shown = 0, []
        for k, (part_name, n) in enumerate(zip(names, counts, strict=True)):
            step = {"name": "split", "sizes": sizes, "seed": seed, "part": k, "names": names}
            self.selections[part_name] = sel.pick(np.sort(order[at : at + n]), step)
            at += n
            shown.append(f"{part_name} {self.selections[part_name].total_episodes:,}")
        self.plan.append(f"split {name} {sizes} seed {seed} -> {', '.join(shown)} episodes")

    def _subsample(self, where: str, p: dict[str, Any]) -> None:
        if (p.get("n") is None) == (p.get("fraction") is None):
            raise _fail(self.name, where, "give exactly one of n (episodes) or fraction")
        for name in self.names(where, p.get("in"), default_all=True):
            sel = self.selections[name]
            size = int(p["n"]) if p.get("n") is not None else float(p["fraction"])
            (count,) = split_sizes([size], sel.total_episodes)
            order = np.random.default_rng(p.get("seed")).permutation(sel.total_episodes)
            step = {"name": "subsample", "size": size, "seed": p.get("seed")}
            self.selections[name] = sel.pick(np.sort(order[:count]), step)
            self.plan.append(f"subsample {name} to {size}: {self.selections[name].count()}")

    def _rename(self, where: str, p: dict[str, Any]) -> None:
        for old, new in p.items():
            self.names(where, old, default_all=False)
            if str(new) in self.selections:
                raise _fail(self.name, where, f"selection {new!r} already exists")
            self.selections[str(new)] = self.selections.pop(str(old))
            self.plan.append(f"rename {old} -> {new}")


def _outputs(
    name: str, outputs: Any, selections: Mapping[str, Selection]
) -> dict[str, dict[str, Any]]:
    if not isinstance(outputs, Mapping) or not outputs:
        raise _fail(name, "outputs", "give a mapping of selection names to dataset ids")
    found = {}
    for out, spec in outputs.items():
        spec = {"id": spec} if isinstance(spec, str) else dict(spec or {})
        if out not in selections:
            raise _fail(name, f"output {out!r}", _unknown("selection", str(out), list(selections)))
        if not isinstance(spec.get("id"), str):
            raise _fail(name, f"output {out!r}", "needs an id, e.g. train: ns/name-train-v0")
        storage.parse_dataset_id(spec["id"])
        unknown = set(spec) - {"id", "metadata"}
        if unknown:
            raise _fail(
                name, f"output {out!r}", f"unknown keys {sorted(unknown)} (known: id, metadata)"
            )
        if selections[out].total_episodes == 0:
            raise _fail(name, f"output {out!r}", "has no episodes; loosen the filter or the sizes")
        found[str(out)] = spec
    ids = [s["id"] for s in found.values()]
    if len(set(ids)) != len(ids):
        raise _fail(name, "outputs", f"two outputs write the same dataset id ({ids})")
    return found


def _push_plan(
    name: str, push: Any, remote: str | None, outputs: Mapping[str, Any]
) -> tuple[Remote, list[str], bool] | None:
    """``(remote, output names, overwrite)`` of the recipe's ``push``, checked before writes."""
    if push is None or push is False:
        return None
    if push is True:
        spec: dict[str, Any] = {}
    elif isinstance(push, str):
        spec = {"remote": push}
    elif isinstance(push, Mapping):
        spec = dict(push)
        for key in spec:
            if key not in _PUSH_KEYS:
                raise _fail(name, "push", _unknown("key", str(key), _PUSH_KEYS))
    else:
        raise _fail(name, "push", "give true, a remote URI or {remote, outputs, overwrite}")
    target = open_remote(remote or spec.get("remote"))
    names = [str(n) for n in _as_list(spec.get("outputs") or list(outputs))]
    for n in names:
        if n not in outputs:
            raise _fail(name, "push", _unknown("output", n, list(outputs)))
    return target, names, bool(spec.get("overwrite", False))


def run_recipe(
    recipe: Mapping[str, Any],
    *,
    name: str = "recipe",
    dry_run: bool = False,
    overwrite: bool = False,
    root: str | Path | None = None,
    provenance: Mapping[str, Any] | None = None,
    remote: str | None = None,
) -> RecipeResult:
    """Plan a recipe on views, then (unless ``dry_run``) write its outputs.

    Args:
        recipe: the recipe mapping (``sources``, ``steps``, ``outputs``; see the module doc).
        name: the recipe's name, recorded in each output's lineage.
        dry_run: plan and count only; nothing is written.
        overwrite: replace output datasets that exist.
        root: datasets root (default ``$HARVEST_DATASETS``).
        provenance: extra provenance for the outputs (the CLI stores the resolved recipe
            and its overrides).
        remote: where ``push`` publishes (wins over the recipe's ``push.remote``).

    Raises:
        UsageError: a malformed recipe, an unknown step or selection, a bad expression, an
            empty output; all before any write.
        DatasetNotFoundError: a source does not exist.
        DatasetExistsError: an output exists and ``overwrite`` is false (before any write).
        RemoteError: a push failed; the outputs are written locally (``curate push`` them).
    """
    if not isinstance(recipe, Mapping):
        raise _fail(name, "", "is empty; pick one with recipe=NAME (see conf/recipe/)")
    for key in recipe:
        if key not in _RECIPE_KEYS:
            raise _fail(name, "", _unknown("key", str(key), _RECIPE_KEYS))
    planner = _Planner(name, root)
    with _bad_values(name, "sources"):
        planner.sources(recipe.get("sources"))
    steps = recipe.get("steps") or []
    if not isinstance(steps, Sequence) or isinstance(steps, str):
        raise _fail(name, "", "steps must be a list of '- KIND: PARAMS' items")
    for i, raw in enumerate(steps, start=1):
        planner.step(i, raw)
    with _bad_values(name, "outputs"):
        outputs = _outputs(name, recipe.get("outputs"), planner.selections)
    result = RecipeResult(name, dry_run, planner.plan)
    for out_name, spec in outputs.items():
        sel = planner.selections[out_name]
        path = storage.dataset_path(spec["id"], root)
        if (path / storage.METADATA_FILE).exists() and not overwrite:
            raise DatasetExistsError(
                f"recipe {name}: output {out_name} -> {spec['id']!r} already exists at {path}; "
                "pass overwrite=true or change its id",
                dataset_id=spec["id"],
            )
        result.plan.append(f"output {out_name} -> {spec['id']} ({sel.count()})")
    with _bad_values(name, "push"):
        push = _push_plan(name, recipe.get("push"), remote, outputs)
    if push is not None:
        target, names, push_overwrite = push
        result.plan.append(f"push {', '.join(names)} -> {target.uri}")
    if dry_run:
        return result
    for out_name, spec in outputs.items():
        write_views(
            planner.selections[out_name].parts,
            spec["id"],
            operation={"name": "recipe", "recipe": name, "output": out_name},
            root=root,
            overwrite=overwrite,
            metadata={"description": recipe.get("description"), **(spec.get("metadata") or {})},
            provenance=provenance,
        )
        result.outputs[out_name] = spec["id"]
    if push is not None:
        for out_name in names:
            report = target.push(outputs[out_name]["id"], root=root, overwrite=push_overwrite)
            result.pushed.append(report.render())
    return result
