"""Hostile input (issue 08, item 6): what users and remotes hand harvest cannot hurt it.

Property tests (the budgets are the ``max_examples`` below; see ``INPUTS``): nested space JSON
round trips, dataset ids through every public entry point, filter expressions from any text
and from a grammar that mixes the allowed language with attribute access, dunders, calls of
builtins and subscripts, recipe YAML and collect configs with wrong types. Then a hand-made
``file://`` remote whose manifests and files try to reach outside the datasets root, and a
pulled dataset whose provenance names a ``_target_`` that records being imported or called.

Errors must be one ``HarvestError`` line; anything else (a ``TypeError``, a traceback, a
write outside the root, an import of a module the user did not name) fails.
"""

from __future__ import annotations

import builtins
import json
import math
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from helpers import collect_cartpole
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from strategies import ID_TEXT, NESTED_SPACES, assert_same_space

from collector import storage
from collector.collect import collect
from collector.errors import (
    ConfigMismatchError,
    CorruptDatasetError,
    DatasetIdError,
    DatasetNotFoundError,
    HarvestError,
    RemoteError,
    UsageError,
)
from collector.spaces import check_supported, space_from_json, space_to_json
from curation.api import load_dataset
from curation.catalog import delete_dataset, list_local_datasets
from curation.describe import describe_dataset
from curation.expr import ExpressionError, evaluate_expression
from curation.recipes import STEP_KINDS, run_recipe
from curation.remotes import open_remote, pull_dataset

#: Inputs tried per property test (hypothesis ``max_examples``), quoted in the issue's notes.
INPUTS = {"spaces": 200, "ids": 150, "expr_text": 400, "expr_grammar": 400, "recipes": 300}
INPUTS["configs"] = 120
PROPS = {"deadline": None, "database": None}


def one_line(err: BaseException) -> str:
    text = str(err)
    assert text and "\n" not in text and "Traceback" not in text, repr(text)
    return text


# ------------------------------------------------------------------------------------------
# 1. spaces: any nesting of every stored leaf survives JSON


@settings(max_examples=INPUTS["spaces"], **PROPS)
@given(NESTED_SPACES)
def test_any_nested_space_round_trips_through_json(space: Any) -> None:
    check_supported(space, "observation")
    text = json.dumps(space_to_json(space), allow_nan=False)
    rebuilt = space_from_json(text)
    assert_same_space(rebuilt, space)
    assert json.dumps(space_to_json(rebuilt), allow_nan=False) == text


# ------------------------------------------------------------------------------------------
# 2. dataset ids: refused before touching disk by every entry point, or inside the root


def id_entry_points(root: Path) -> dict[str, Callable[[str], Any]]:
    remote = root.parent / "remote"
    remote.mkdir(exist_ok=True)
    uri = f"file://{remote}"
    return {
        "load_dataset": lambda i: load_dataset(i, root=root),
        "load_dataset(download)": lambda i: load_dataset(i, True, root=root, remote=uri),
        "delete_dataset": lambda i: delete_dataset(i, root=root),
        "verify_dataset": lambda i: storage.verify_dataset(i, root),
        "pull": lambda i: pull_dataset(i, uri, root=root),
        "remote.exists": lambda i: open_remote(uri).exists(i),
        "remote.push": lambda i: open_remote(uri).push(i, root=root),
        "remote.delete": lambda i: open_remote(uri).delete(i),
    }


def disk(where: Path) -> list[str]:
    return sorted(p.relative_to(where).as_posix() for p in where.rglob("*"))


@settings(max_examples=INPUTS["ids"], **PROPS)
@given(ID_TEXT)
@example("../../outside-v0")
@example("/tmp/abs-v0")
@example("ns/../../x-v0")
@example("~/x-v0")
def test_any_id_is_refused_before_touching_disk_or_stays_inside_the_root(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        root = base / "in" / "datasets"
        root.mkdir(parents=True)
        calls = id_entry_points(root)
        before = disk(base)
        try:
            storage.parse_dataset_id(text)
        except DatasetIdError:
            for name, call in calls.items():
                with pytest.raises(DatasetIdError) as info:
                    call(text)
                one_line(info.value)
                assert disk(base) == before, f"{name}({text!r}) touched the disk"
            return
        for call in calls.values():
            try:
                call(text)  # verify_dataset reports a missing dataset instead of raising
            except DatasetNotFoundError as err:
                one_line(err)
        outside = [p for p in disk(base) if not (base / p).resolve().is_relative_to(base)]
        assert outside == []
        assert all(p.startswith(("in", "remote")) for p in disk(base))


# ------------------------------------------------------------------------------------------
# 3. filter expressions: evaluate, or one ExpressionError; nothing of Python ever runs

FIELDS = {
    "id": np.arange(4),
    "return": np.array([1.5, -2.0, np.nan, 300.0]),
    "length": np.array([10, 0, 7, 500]),
    "terminated": np.array([True, False, True, False]),
    "source": np.array(["a", "b-v0", "", "it's"]),
    "seed": np.array([0, 2**63, 5, 7], np.uint64),
}
SPIED = ("__import__", "open", "eval", "exec", "compile", "globals", "getattr", "breakpoint")


def evaluate_spied(text: str) -> tuple[np.ndarray | ExpressionError, list[str]]:
    """Evaluate over ``FIELDS``; also return every builtin that could run code it called."""
    called: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        for name in SPIED:
            original = getattr(builtins, name)

            def spy(*args: Any, _n: str = name, _o: Any = original, **kw: Any) -> Any:
                # numpy and difflib import lazily; only a module not loaded yet is suspect
                if _n != "__import__" or (args and args[0] not in sys.modules):
                    called.append(_n)
                return _o(*args, **kw)

            patch.setattr(builtins, name, spy)
        called.clear()  # setattr itself imports
        try:
            out: np.ndarray | ExpressionError = evaluate_expression(text, FIELDS)
        except ExpressionError as err:
            out = err
        during = list(called)
    return out, during


def check_expression(text: str, grammar: bool = False) -> None:
    out, called = evaluate_spied(text)
    if isinstance(out, ExpressionError):
        assert one_line(out).startswith("bad expression ")
    else:
        assert out.dtype == np.bool_ and out.shape == (4,)
        if grammar:  # the generated strings hold nothing dangerous, so any of these is code
            assert not [b for b in BANNED if b in text], f"accepted {text!r}"
    assert called == [], f"{text!r} called {called}"


atoms = st.sampled_from(
    [
        "id", "return", "length", "terminated", "source", "seed", "1", "2.5", ".5", "1e3",
        "'x'", '"b-v0"', "true", "False", "nope", "_secret", "__class__", "__builtins__",
        "()", "[]", "{}", "None", "os", "self",
    ]
)  # fmt: skip
CALLABLES = ["abs", "min", "max", "isnan", "eval", "exec", "open", "__import__", "getattr",
             "len", "print", "type", "compile", "globals", "vars", "breakpoint"]  # fmt: skip
BINARY = ["+", "-", "*", "/", "//", "%", "**", "==", "!=", "<", "<=", ">", ">=", "and", "or",
          "in", "not in", "@", "&", "|", "^", "<<", ":=", "if", ";", ","]  # fmt: skip
ALLOWED_CALLS = ("abs", "min", "max", "isnan")
BANNED = ["__", "lambda", "await", ":=", ";", "@", ".real", ".format", ".x", "{}",
          *(f"{c}(" for c in CALLABLES if c not in ALLOWED_CALLS)]  # fmt: skip


def grammar(sub: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(sub, st.sampled_from(BINARY), sub).map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
        st.tuples(st.sampled_from(["not ", "-", "+", "~", "lambda: ", "await "]), sub).map("".join),
        sub.map(lambda s: f"({s})"),
        st.tuples(st.sampled_from(CALLABLES), st.lists(sub, max_size=3)).map(
            lambda t: f"{t[0]}({', '.join(t[1])})"
        ),
        st.tuples(sub, st.sampled_from([".__class__", ".real", ".__dict__", ".format", ".x"])).map(
            "".join
        ),
        st.tuples(sub, sub).map(lambda t: f"{t[0]}[{t[1]}]"),
        st.tuples(sub, st.sampled_from(["in", "not in"]), st.lists(sub, max_size=3)).map(
            lambda t: f"{t[0]} {t[1]} ({', '.join(t[2])})"
        ),
    )


EXPRESSIONS = st.recursive(atoms, grammar, max_leaves=10)


@settings(
    max_examples=INPUTS["expr_grammar"],
    **PROPS,
)
@given(EXPRESSIONS)
@example("().__class__.__bases__[0].__subclasses__()")
@example("__import__('os').system('true')")
@example("getattr(length, '__class__')")
def test_grammar_expressions_evaluate_or_are_refused_without_running_python(text: str) -> None:
    check_expression(text, grammar=True)


@pytest.mark.parametrize("text", ["(seed + 1 in ())", "seed + 1 > 0", "seed - 3 < 5"])
def test_uint64_arithmetic_calls_no_python_builtin(text: str) -> None:
    """Found by the grammar search: aligning uint64 with an int called ``np.all``, whose
    scalar path goes through ``builtins.getattr`` (numpy's own, but the spy cannot tell)."""
    check_expression(text, grammar=True)


@settings(
    max_examples=INPUTS["expr_text"],
    **PROPS,
)
@given(st.text(max_size=60))
def test_any_text_expression_evaluates_or_is_refused(text: str) -> None:
    check_expression(text)


# ------------------------------------------------------------------------------------------
# shared datasets (collected once per module)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-episode CartPole dataset ``src/cart-v0`` under its own root."""
    root = tmp_path_factory.mktemp("pristine")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HARVEST_DATASETS", str(root))
        collect_cartpole("src/cart-v0", 4, shard_every=2)
    return root


def install(pristine: Path, where: Path, dataset_id: str = "src/cart-v0") -> Path:
    dest = where / dataset_id
    shutil.copytree(pristine / "src/cart-v0", dest)
    return dest


# ------------------------------------------------------------------------------------------
# 4. recipes: any YAML is one HarvestError line, or a plan

JUNK = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 10**12)
    | st.floats(allow_nan=True)
    | st.text(alphabet=st.characters(exclude_characters="$"), max_size=12),
    lambda sub: st.lists(sub, max_size=3) | st.dictionaries(st.text(max_size=6), sub, max_size=3),
    max_leaves=6,
)
NAMES = st.sampled_from(["a", "b", "train", "val", "combined", "nope", "a_0"])


def nearly(kind: str) -> st.SearchStrategy[Any]:
    """Step parameters that are mostly right: known keys with drawn (often wrong) values."""
    keys = {
        "combine": ["inputs", "into"],
        "filter": ["where", "in"],
        "split": ["sizes", "names", "seed", "input"],
        "subsample": ["n", "fraction", "seed", "in"],
        "rename": ["a", "b"],
    }[kind]
    value = st.one_of(
        JUNK,
        NAMES,
        st.lists(NAMES, max_size=3),
        st.sampled_from(["return > 0", "length >", "__import__('os')", "[0.5, 0.5]"]),
        st.lists(st.one_of(st.floats(-1, 2), st.integers(-3, 10)), max_size=4),
    )
    return st.one_of(st.dictionaries(st.sampled_from([*keys, "junk"]), value, max_size=4), value)


STEPS = st.lists(
    st.one_of(
        st.sampled_from([*STEP_KINDS, "drop", "Filter"]).flatmap(
            lambda k: nearly(k if k in STEP_KINDS else "filter").map(lambda p: {k: p})
        ),
        JUNK,
    ),
    max_size=4,
)
RECIPES = st.fixed_dictionaries(
    {},
    optional={
        "sources": st.one_of(
            st.just({"a": "src/cart-v0"}),
            st.just({"a": "src/cart-v0", "b": {"id": "src/cart-v0"}}),
            st.dictionaries(NAMES, st.one_of(JUNK, st.just("src/missing-v0")), max_size=2),
            JUNK,
        ),
        "steps": st.one_of(STEPS, JUNK),
        "outputs": st.one_of(
            st.dictionaries(
                NAMES,
                st.one_of(st.just("out/x-v0"), st.just({"id": "out/y-v0"}), ID_TEXT, JUNK),
                max_size=2,
            ),
            JUNK,
        ),
        "push": st.one_of(st.none(), st.booleans(), st.just("file:///nonexistent"), JUNK),
        "seed": JUNK,
        "description": JUNK,
        "junk": JUNK,
    },
)


@pytest.fixture(scope="module")
def recipe_root(pristine: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("recipes")
    install(pristine, root)
    return root


@settings(
    max_examples=INPUTS["recipes"],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    **PROPS,
)
@given(RECIPES)
@example({"sources": {"a": "src/cart-v0"}, "steps": [{"split": {"sizes": "abc"}}]})
@example({"sources": {"a": "src/cart-v0"}, "steps": [{"subsample": {"n": "x"}}]})
@example({"sources": {"a": "src/cart-v0"}, "steps": [{"split": [0.5, "x"]}]})
@example({"sources": {"a": "src/cart-v0"}, "outputs": {"a": ["x"]}})
@example({"sources": ["a"], "outputs": {"a": "out/x-v0"}})
def test_any_recipe_yaml_plans_or_is_one_harvest_error(
    recipe_root: Path, recipe: dict[str, Any]
) -> None:
    text = yaml.safe_dump(recipe, allow_unicode=True)
    loaded = yaml.safe_load(text)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            result = run_recipe(loaded, name="fuzz", dry_run=True, root=recipe_root)
    except HarvestError as err:
        one_line(err)
    else:
        assert result.dry_run and result.plan
    assert sorted(p.name for p in recipe_root.iterdir()) == ["src"]


# ------------------------------------------------------------------------------------------
# 5. collect configs: wrong types are one UsageError line before anything is written


def composed_collect_config() -> dict[str, Any]:
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    with initialize_config_module("conf", version_base=None):
        cfg = compose("collect", overrides=["episodes=2"])
    out = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(out, dict)
    out.pop("hydra", None)
    return out


CONFIG_KEYS = [
    ("episodes",),
    ("checkpoint", "every_mb"),
    ("checkpoint", "every_episodes"),
    ("checkpoint", "every_seconds"),
    ("checkpoint",),
    ("num_envs",),
    ("storage", "compression"),
    ("storage", "shard_mb"),
    ("storage",),
    ("seed",),
    ("env",),
    ("env_kwargs",),
    ("max_episode_steps",),
    ("vectorization_mode",),
    ("runner",),
    ("runner", "name"),
    ("policy",),
    ("policy", "_target_"),
    ("dataset_id",),
    ("metadata",),
    ("record_infos",),
]
BAD_VALUES = st.one_of(
    JUNK,
    st.sampled_from(["abc", "-1", "zstd:99", "gzip:99", "1e400", "CartPole-v1", "../x-v0", "1"]),
    st.sampled_from([0, -1, 0.5, 2.5, 10**30, True, float("inf"), float("nan")]),
)


@pytest.fixture(scope="module")
def base_config() -> dict[str, Any]:
    return composed_collect_config()


@settings(
    max_examples=INPUTS["configs"],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    **PROPS,
)
@given(st.lists(st.tuples(st.sampled_from(CONFIG_KEYS), BAD_VALUES), min_size=1, max_size=2))
@example([(("checkpoint",), 5)])
@example([(("storage",), "lzf")])
@example([(("runner",), "local")])
@example([(("metadata",), 3)])
@example([(("env_kwargs",), [1])])
@example([(("max_episode_steps",), "x")])
@example([(("episodes",), 3), (("num_envs",), 2.5)])
@example([(("episodes",), 10**30)])
@example([(("checkpoint", "every_mb"), float("inf"))])
@example([(("record_infos",), float("inf"))])
@example([(("metadata",), {"author": float("nan")})])
def test_bad_collect_configs_are_one_usage_error_line(
    base_config: dict[str, Any], tmp_path: Path, changes: list[tuple[tuple[str, ...], Any]]
) -> None:
    cfg = json.loads(json.dumps(base_config))
    cfg["progress"] = False
    for path, value in changes:
        node = cfg
        for key in path[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[path[-1]] = value
    # valid but costly: keep runs small (episodes >= 2**63 is an error; num_envs=10**30 would
    # build 10**30 recorders, as asked)
    for key, most, cap in (("episodes", 3, 2**63), ("num_envs", 2, math.inf)):
        value = cfg.get(key)
        if type(value) in (int, float) and most < value < cap and float(value).is_integer():
            cfg[key] = most
    root = Path(tempfile.mkdtemp(dir=tmp_path))
    cfg["datasets_root"] = str(root)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. gymnasium on odd env kwargs
            collect(cfg)
    except HarvestError as err:
        one_line(err)


# ------------------------------------------------------------------------------------------
# 6. a hostile file:// remote: nothing lands outside the datasets root


@pytest.fixture
def hostile_remote(pristine: Path, tmp_path: Path) -> tuple[Path, str, Path]:
    """(remote folder, its URI, a sentinel folder outside everything) with ``src/cart-v0``."""
    base = tmp_path / "remote"
    install(pristine, base)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.h5").write_bytes(b"not yours")
    return base, f"file://{base}", outside


def edit_manifest(folder: Path, change: Callable[[dict[str, Any]], None]) -> None:
    meta = json.loads((folder / storage.METADATA_FILE).read_text())
    change(meta)
    (folder / storage.METADATA_FILE).chmod(0o644)
    (folder / storage.METADATA_FILE).write_text(storage.seal_metadata(meta))  # as an attacker would


def snapshot(where: Path) -> list[tuple[str, bytes | None]]:
    return sorted(
        (p.relative_to(where).as_posix(), p.read_bytes() if p.is_file() else None)
        for p in where.rglob("*")
    )


@pytest.mark.parametrize(
    "name",
    [
        "../../outside/evil.h5",
        "../escape.h5",
        "/tmp/abs.h5",
        "shard-000000-00000000.h5/../../../x.h5",
        "sub/shard-000000-00000000.h5",
        "..",
        "",
    ],
)
def test_manifest_names_outside_data_fail_the_pull_with_one_error(
    name: str, hostile_remote: tuple[Path, str, Path], datasets_root: Path
) -> None:
    base, uri, outside = hostile_remote
    folder = base / "src/cart-v0"
    edit_manifest(folder, lambda m: m["shards"][0].update(file=name))
    before = snapshot(outside)
    with pytest.raises(CorruptDatasetError, match="not a plain shard") as info:
        pull_dataset("src/cart-v0", uri)
    one_line(info.value)
    assert snapshot(outside) == before
    assert list_local_datasets() == {}
    assert [p for p in datasets_root.rglob("*") if p.is_file() and ".locks" not in p.parts] == []


def test_a_manifest_naming_another_dataset_id_is_refused(
    hostile_remote: tuple[Path, str, Path],
) -> None:
    base, uri, _ = hostile_remote
    edit_manifest(base / "src/cart-v0", lambda m: m.update(dataset_id="../../outside-v0"))
    with pytest.raises(CorruptDatasetError, match="describes") as info:
        pull_dataset("src/cart-v0", uri)
    one_line(info.value)


def test_remote_folders_that_are_not_ids_are_skipped_by_list(
    hostile_remote: tuple[Path, str, Path],
) -> None:
    base, uri, _ = hostile_remote
    for junk in ("no-version", "a b-v0", "ns/..hidden-v0", "x-v0/y z"):
        (base / junk).mkdir(parents=True, exist_ok=True)
        (base / junk / storage.METADATA_FILE).write_text("{}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        listed = open_remote(uri).list()
    assert list(listed) == ["src/cart-v0"]
    assert all("\n" not in str(w.message) for w in caught)


@pytest.mark.parametrize("target", ["secret", "dev-zero", "fifo", "dir"])
def test_a_symlink_or_special_file_in_a_remote_dataset_is_refused(
    target: str, hostile_remote: tuple[Path, str, Path], datasets_root: Path
) -> None:
    base, uri, outside = hostile_remote
    data = base / "src/cart-v0" / storage.DATA_DIR
    shard = sorted(data.glob("shard-*.h5"))[0]
    shard.chmod(0o644)
    shard.unlink()
    if target == "secret":
        shard.symlink_to(outside / "secret.h5")
    elif target == "dev-zero":
        shard.symlink_to("/dev/zero")  # a pull that follows it never ends
    elif target == "fifo":
        os.mkfifo(shard)
    else:
        shard.symlink_to(outside)
    before = snapshot(outside) if target != "fifo" else None
    with pytest.raises((RemoteError, CorruptDatasetError)) as info:
        pull_dataset("src/cart-v0", uri)
    assert shard.name in one_line(info.value)
    if before is not None:
        assert snapshot(outside) == before
    assert list_local_datasets() == {}
    assert not (datasets_root / ".tmp").exists() or list((datasets_root / ".tmp").iterdir()) == []


def test_a_symlinked_metadata_json_is_refused(
    hostile_remote: tuple[Path, str, Path],
) -> None:
    base, uri, outside = hostile_remote
    meta = base / "src/cart-v0" / storage.METADATA_FILE
    (outside / storage.METADATA_FILE).write_bytes(meta.read_bytes())
    meta.chmod(0o644)
    meta.unlink()
    meta.symlink_to("/dev/zero")
    with pytest.raises(RemoteError, match=storage.METADATA_FILE) as info:
        pull_dataset("src/cart-v0", uri)
    one_line(info.value)


# ------------------------------------------------------------------------------------------
# 7. a pulled dataset's provenance never imports or calls a _target_ by itself

MARKER_MODULE = "harvest_hostile_marker"
MARKER_SOURCE = '''
"""Records in $HARVEST_MARKER that it was imported, and whatever of it was called."""
import os
from pathlib import Path

import numpy as np

Path(os.environ["HARVEST_MARKER"], "imported").touch()


def mark(what):
    Path(os.environ["HARVEST_MARKER"], what).touch()


class Policy:
    def __init__(self, *args, **kwargs):
        mark("policy-called")

    def __call__(self, obs):
        return 0


def make_env(*args, **kwargs):
    mark("env-called")
'''


@pytest.fixture
def marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A module on sys.path that leaves files in the returned folder when imported or called."""
    code = tmp_path / "code"
    code.mkdir()
    (code / f"{MARKER_MODULE}.py").write_text(MARKER_SOURCE)
    found = tmp_path / "marks"
    found.mkdir()
    monkeypatch.setenv("HARVEST_MARKER", str(found))
    monkeypatch.syspath_prepend(str(code))
    monkeypatch.delitem(sys.modules, MARKER_MODULE, raising=False)
    return found


def poison(meta: dict[str, Any]) -> None:
    """Every _target_ and env name in provenance points at the marker module."""
    prov = meta["provenance"]
    for cfg in (prov["config"], prov["data_config"]):
        cfg["policy"] = {"_target_": f"{MARKER_MODULE}.Policy", "eps": 0.1}
        cfg["env"] = f"{MARKER_MODULE}:make_env"
    prov["config"]["env_kwargs"] = {"_target_": f"{MARKER_MODULE}.make_env"}
    prov["config"]["runner"] = {"_target_": f"{MARKER_MODULE}.Policy", "name": "local"}
    prov["hydra"] = {"callbacks": {"x": {"_target_": f"{MARKER_MODULE}.make_env"}}}


def test_a_pulled_provenance_target_is_never_imported_or_called(
    hostile_remote: tuple[Path, str, Path], marker: Path, tmp_path: Path
) -> None:
    base, uri, _ = hostile_remote
    edit_manifest(base / "src/cart-v0", poison)
    pull_dataset("src/cart-v0", uri)
    ds = load_dataset("src/cart-v0")
    assert ds.metadata["provenance"]["config"]["policy"]["_target_"].startswith(MARKER_MODULE)
    for episode in ds.iterate_episodes():
        assert episode.observations.shape[0] == len(episode.actions) + 1
    ds.filter_episodes("length > 0").to_transitions()
    describe_dataset(ds)
    list_local_datasets()
    env = ds.recover_environment()
    env.reset(seed=0)
    env.close()
    resume = {
        "env": "CartPole-v1",
        "episodes": 6,
        "seed": 0,
        "dataset_id": "src/cart-v0",
        "policy": {"_target_": "collector.policies.RandomPolicy"},
    }
    with pytest.raises(ConfigMismatchError) as info:
        collect(resume)
    assert "policy" in one_line(info.value)
    assert sorted(p.name for p in marker.iterdir()) == []
    assert MARKER_MODULE not in sys.modules
    # the control: the same target named by the user is imported and called
    explicit = {**resume, "dataset_id": "mine/x-v0", "episodes": 1}
    collect({**explicit, "policy": {"_target_": f"{MARKER_MODULE}.Policy"}})
    assert sorted(p.name for p in marker.iterdir()) == ["imported", "policy-called"]


def test_usage_errors_of_the_fuzzed_families_are_usage_errors() -> None:
    assert issubclass(ExpressionError, UsageError) and issubclass(DatasetIdError, UsageError)
