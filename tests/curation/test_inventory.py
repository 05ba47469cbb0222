"""Tests for ``curation.describe``, ``curation.report`` and ``curation.catalog``.

Tables, descriptions, report plots and namespaces.

Datasets are real ones, written by ``collect`` and ``DataCollector`` and curated with
``curation.ops``; expected numbers come from ``Dataset.episodes()`` and numpy.
"""

from __future__ import annotations

import json
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from helpers import collect_cartpole, folder_bytes, record_cartpole

from collector import storage
from collector.data_collector import DataCollector
from collector.errors import (
    CorruptDatasetError,
    DatasetExistsError,
    DatasetIdError,
    DatasetNotFoundError,
    HarvestWarning,
    MissingExtraError,
    UsageError,
)
from curation.api import load_dataset
from curation.catalog import (
    create_namespace,
    get_namespace_metadata,
    list_local_datasets,
    list_namespaces,
)
from curation.describe import dataset_rows, describe_dataset, describe_namespace, render_table
from curation.ops import combine_datasets, split_dataset
from curation.report import _groups, plot_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def cartpole(dataset_id: str, episodes: int = 6, seed: int = 0) -> str:
    return collect_cartpole(dataset_id, episodes, seed=seed)


def line_with(text: str, start: str) -> str:
    """The one line of ``text`` that starts with ``start`` (after indentation)."""
    found = [line for line in text.splitlines() if line.strip().startswith(start)]
    assert len(found) == 1, (start, text)
    return found[0]


def section(text: str, title: str) -> str:
    """The blank-line separated section of ``text`` whose first line starts with ``title``."""
    found = [part for part in text.split("\n\n") if part.startswith(title)]
    assert len(found) == 1, (title, text)
    return found[0]


def fields(line: str) -> list[str]:
    """A ``key  value`` line's parts (split on runs of 2+ spaces)."""
    return re.split(r"\s{2,}", line.strip())


# -- rows and tables --------------------------------------------------------------------------


def test_dataset_rows_are_json_native() -> None:
    cartpole("cart/a-v0")
    record_cartpole("cart/b-v0", author={"bob", "ann"})
    record_cartpole("solo-v1", author="cy")
    metas = list_local_datasets()
    rows = dataset_rows(metas)
    assert [r["name"] for r in rows] == ["cart/a-v0", "cart/b-v0", "solo-v1"]
    for row, (dataset_id, meta) in zip(rows, metas.items(), strict=True):
        ds = load_dataset(dataset_id)
        assert row["episodes"] == ds.total_episodes
        assert row["steps"] == ds.total_steps
        # what du says of its data/ folder: the shards and their index files (issue 19)
        assert row["size"] == folder_bytes(storage.dataset_path(dataset_id) / "data") > 0
        assert row["size"] > meta["dataset_bytes"]
    assert [r["author"] for r in rows] == ["", "ann, bob", "cy"]
    assert json.loads(json.dumps(rows)) == rows
    assert all(type(r["size"]) is int and type(r["episodes"]) is int for r in rows)


def test_render_table_lists_every_dataset_with_a_caption(datasets_root: Path) -> None:
    cartpole("cart/a-v0")
    cartpole("cart/b-v0", episodes=4, seed=1)
    rows = dataset_rows(list_local_datasets())
    text = render_table(rows, f"Local datasets ({datasets_root})")
    assert "\x1b" not in text
    assert text.splitlines()[0] == f"Local datasets ({datasets_root})"  # never wrapped
    header = line_with(text, "┃ Name")
    assert re.findall(r"\w+", header) == ["Name", "Episodes", "Steps", "Size", "Author"]
    for row in rows:
        cells = line_with(text, f"│ {row['name']} ").split("│")
        assert [c.strip() for c in cells[2:4]] == [str(row["episodes"]), str(row["steps"])]
        assert cells[4].strip().endswith("kB")
    total = sum(r["size"] for r in rows)
    assert total < 1_000_000  # so the caption is in kB
    assert text.endswith("kB\n") and not text.endswith("\n\n")  # printed with end=""
    assert text.splitlines()[-1] == (f"Number of datasets: 2, total size: {total / 1000:.1f} kB")


def test_render_table_human_sizes_and_literal_text() -> None:
    rows = [
        {"name": "a-v0", "episodes": 1234, "steps": 5, "size": 999, "author": "[bold]x[/bold]"},
        {"name": "b-v0", "episodes": 0, "steps": 0, "size": 2_500_000_000, "author": ""},
    ]
    text = render_table(rows, "[red]t[/red]")
    assert "[red]t[/red]" in text and "[bold]x[/bold]" in text  # no rich markup
    assert re.search(r"│ a-v0 +│ +1,234 │ +5 │ +999 B │", text)
    assert "2.5 GB" in text
    assert "Number of datasets: 2, total size: 2.5 GB" in text


def test_render_table_empty(datasets_root: Path) -> None:
    assert dataset_rows(list_local_datasets()) == []
    message = f"No datasets under {datasets_root}"
    assert render_table([], "Local datasets", empty_message=message) == message + "\n"
    title = f"Local datasets ({datasets_root})"
    assert render_table([], title) == f"{title}: no datasets\n"


# -- describe_dataset -----------------------------------------------------------------------------


def test_describe_collected_dataset() -> None:
    ds = load_dataset(cartpole("cart/a-v0"))
    text = describe_dataset(ds)
    assert "\x1b" not in text
    assert text.endswith("\n") and not text.endswith("\n\n")
    assert text.splitlines()[0] == "Dataset cart/a-v0"
    assert fields(line_with(text, "path")) == ["path", str(storage.dataset_path("cart/a-v0"))]
    assert fields(line_with(text, "format version")) == [
        "format version",
        str(storage.FORMAT_VERSION),
    ]
    assert fields(line_with(text, "fingerprint")) == ["fingerprint", ds.fingerprint]
    head = section(text, "Dataset cart/a-v0")
    assert fields(line_with(head, "episodes")) == ["episodes", "6"]
    assert fields(line_with(text, "steps ")) == ["steps", str(ds.total_steps)]
    size = folder_bytes(storage.dataset_path("cart/a-v0") / "data")  # shards and index files
    assert size > ds.metadata["dataset_bytes"]
    assert fields(line_with(text, "size")) == ["size", f"{size / 1000:.1f} kB ({size:,} bytes)"]
    assert line_with(text, "observations").endswith(repr(ds.observation_space))
    assert fields(line_with(text, "actions")) == ["actions", "Discrete(2)"]
    # env spec
    assert fields(line_with(text, "id ")) == ["id", "CartPole-v1"]
    assert fields(line_with(text, "entry_point")) == ["entry_point", ds.env_spec.entry_point]
    assert fields(line_with(text, "max_episode_steps")) == ["max_episode_steps", "500"]
    assert fields(line_with(text, "kwargs")) == ["kwargs", "{}"]
    # statistics, from the episode tables
    eps = ds.episodes()
    assert line_with(text, "Episode statistics") == "Episode statistics (6 episodes)"
    assert line_with(text, "count").split() == ["count", "min", "mean", "std", "max"]
    for name in ("return", "length"):
        v = eps[name].astype(np.float64)
        expected = [f"{f(v):.6g}" for f in (np.min, np.mean, np.std, np.max)]
        assert line_with(text, name + " ").split() == [name, "6", *expected]
    # provenance
    prov = ds.metadata["provenance"]
    assert fields(line_with(text, "command")) == ["command", "collect"]
    assert fields(line_with(text, "env ")) == ["env", "CartPole-v1"]
    assert fields(line_with(text, "policy")) == ["policy", "collector.policies.RandomPolicy"]
    assert fields(line_with(text, "seed")) == ["seed", "0"]
    assert fields(line_with(section(text, "Provenance"), "episodes")) == ["episodes", "6"]
    assert fields(line_with(text, "runner")) == ["runner", "local"]
    assert f"numpy {prov['versions']['numpy']}" in line_with(text, "versions")
    assert fields(line_with(text, "git commit")) == [
        "git commit",
        prov["git_commit"] or "unknown",
    ]
    assert "Lineage" not in text and "Author" not in text


def test_describe_author_fields() -> None:
    record_cartpole(
        "cart/b-v0",
        author={"bob", "ann"},
        author_email="ann@example.org",
        algorithm_name="alternate",
        code_permalink="https://example.org/code",
        description="Two lines:\nsecond line",
        requirements=["gymnasium>=1.0"],
        ref_min_score=0.0,
        ref_max_score=500.0,
        eval_env="CartPole-v1",
    )
    text = describe_dataset(load_dataset("cart/b-v0"))
    assert "\nAuthor\n" in text
    assert fields(line_with(text, "author ")) == ["author", "ann, bob"]
    assert fields(line_with(text, "author_email")) == ["author_email", "ann@example.org"]
    assert fields(line_with(text, "algorithm_name")) == ["algorithm_name", "alternate"]
    assert fields(line_with(text, "code_permalink"))[1] == "https://example.org/code"
    assert fields(line_with(text, "description")) == ["description", "Two lines:"]
    assert fields(line_with(text, "second line")) == ["second line"]  # continuation, indented
    assert line_with(text, "second line").startswith(" " * 10)
    assert fields(line_with(text, "requirements")) == ["requirements", "gymnasium>=1.0"]
    assert fields(line_with(text, "ref_min_score")) == ["ref_min_score", "0.0"]
    assert fields(line_with(text, "ref_max_score")) == ["ref_max_score", "500.0"]
    assert fields(line_with(text, "eval_env_spec")) == ["eval_env_spec", "CartPole-v1"]
    assert fields(line_with(text, "created by")) == ["created by", "DataCollector"]


def test_describe_combined_dataset_lineage() -> None:
    a, b = load_dataset(cartpole("cart/a-v0")), load_dataset(cartpole("cart/b-v0", 4, seed=1))
    text = describe_dataset(combine_datasets([a, b], "cart/both-v0"))
    assert fields(line_with(text, "command")) == ["command", "combine"]
    assert re.fullmatch(
        r"created\s+\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", line_with(text, "created").strip()
    )
    assert line_with(text, "Lineage") == "Lineage: combine of 2 source(s)"
    assert fields(line_with(text, "cart/a-v0")) == [
        "cart/a-v0",
        f"fingerprint {a.fingerprint[:16]}",
        "6 episodes, first id 0",
    ]
    assert fields(line_with(text, "cart/b-v0")) == [
        "cart/b-v0",
        f"fingerprint {b.fingerprint[:16]}",
        "4 episodes, first id 6",
    ]
    assert fields(line_with(text, "episodes ")) == ["episodes", "10"]


def test_describe_saved_split_lineage() -> None:
    source = load_dataset(cartpole("cart/a-v0", episodes=10))
    _, val = split_dataset(source, [0.8, 0.2], seed=3)
    saved = val.filter_episodes("return > 10").save("cart/val-v0")
    text = describe_dataset(saved)
    assert line_with(text, "Lineage") == "Lineage: save of 1 source(s)"
    assert fields(line_with(text, "cart/a-v0"))[1] == f"fingerprint {source.fingerprint[:16]}"
    lines = text.splitlines()
    at = lines.index(line_with(text, "cart/a-v0"))
    assert [line.strip() for line in lines[at + 1 :]] == [
        "split part 1 of sizes [0.8, 0.2] seed 3",
        'filter where "return > 10"',
    ]


def test_describe_empty_view_without_env_spec() -> None:
    class OneStep(gym.Env):
        observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
        action_space = gym.spaces.Discrete(2)

        def reset(self, *, seed: int | None = None, options: dict | None = None) -> Any:
            super().reset(seed=seed)
            return self.observation_space.sample(), {}

        def step(self, action: Any) -> Any:
            return self.observation_space.sample(), 1.0, True, False, {}

    env = DataCollector(OneStep())
    env.reset(seed=0)
    env.step(0)
    env.create_dataset("plain-v0")
    view = load_dataset("plain-v0").filter_episodes("return > 5")
    text = describe_dataset(view)
    assert "Environment: none" in text.splitlines()
    assert fields(line_with(text, "episodes ")) == ["episodes", "0"]
    assert line_with(text, "return ").split() == ["return", "0", "-", "-", "-", "-"]


# -- plot_report ----------------------------------------------------------------------------


def read_png(path: Path) -> np.ndarray:
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    return matplotlib.image.imread(path)


def test_plot_report_by_source(tmp_path: Path) -> None:
    a, b = load_dataset(cartpole("cart/a-v0")), load_dataset(cartpole("cart/b-v0", 4, seed=1))
    both = combine_datasets([a, b], "cart/both-v0")
    groups = _groups(both, "source")
    assert list(groups) == ["cart/a-v0", "cart/b-v0"]
    for name, source in (("cart/a-v0", a), ("cart/b-v0", b)):
        np.testing.assert_array_equal(groups[name]["return"], source.episodes()["return"])
        np.testing.assert_array_equal(groups[name]["length"], source.episodes()["length"])
    out = plot_report(both, tmp_path / "plots" / "both.png", bins=10)
    assert out == tmp_path / "plots" / "both.png"
    image = read_png(out)
    assert image.ndim == 3 and image.shape[2] == 4 and image.shape[1] > image.shape[0] > 100
    assert sorted(p.name for p in out.parent.iterdir()) == ["both.png"]  # no temp file left
    # a plain dataset is one group; str paths work, and a second run replaces the file
    assert list(_groups(a)) == ["cart/a-v0"]
    assert plot_report(a, str(out)) == out
    assert read_png(out).shape[2] == 4


def test_plot_report_by_split(tmp_path: Path) -> None:
    ds = load_dataset(cartpole("cart/a-v0", episodes=10))
    train, val = split_dataset(ds, [0.7, 0.3], seed=0)
    groups = _groups(ds, "split", {"train": train, "val": val})
    assert list(groups) == ["train", "val"]
    np.testing.assert_array_equal(groups["val"]["return"], val.episodes()["return"])
    assert len(groups["train"]["length"]) == 7
    out = plot_report(ds, tmp_path / "split.png", by="split", splits={"train": train, "val": val})
    assert read_png(out).shape[2] == 4
    # an empty view is one empty group, and still plots
    empty = ds.filter_episodes("return > 100000")
    assert {k: len(v["return"]) for k, v in _groups(empty).items()} == {"cart/a-v0": 0}
    assert read_png(plot_report(empty, tmp_path / "empty.png")).shape[2] == 4


def test_plot_report_bad_grouping(tmp_path: Path) -> None:
    ds = load_dataset(cartpole("cart/a-v0"))
    with pytest.raises(UsageError, match=re.escape("by='env' is not a grouping; use by='source'")):
        plot_report(ds, tmp_path / "x.png", by="env")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=re.escape("plot_report(by='split') needs splits=")):
        plot_report(ds, tmp_path / "x.png", by="split")
    with pytest.raises(UsageError, match=re.escape("splits=... are plotted with by='split'")):
        plot_report(ds, tmp_path / "x.png", splits={"all": ds})
    assert not (tmp_path / "x.png").exists()


def test_plot_report_without_matplotlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = load_dataset(cartpole("cart/a-v0"))
    for name in [n for n in sys.modules if n.split(".")[0] == "matplotlib"] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingExtraError, match=re.escape('pip install "harvest[plot]"')):
        plot_report(ds, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


# -- namespaces -----------------------------------------------------------------------------


def namespace_file(root: Path, namespace: str) -> Path:
    return root / namespace / storage.NAMESPACE_METADATA_FILE


def test_create_namespace_writes_strict_json(datasets_root: Path) -> None:
    got = create_namespace("cart/experts", "CartPole experts", maintainer="ann", level=3)
    expected = {
        "namespace": "cart/experts",
        "description": "CartPole experts",
        "maintainer": "ann",
        "level": 3,
    }
    assert got == expected
    assert json.loads(namespace_file(datasets_root, "cart/experts").read_text()) == expected
    assert create_namespace("bare", root=datasets_root) == {
        "namespace": "bare",
        "description": None,
    }


def test_create_namespace_twice(datasets_root: Path) -> None:
    create_namespace("cart", "first", maintainer="ann")
    file = namespace_file(datasets_root, "cart")
    with pytest.raises(
        DatasetExistsError,
        match=re.escape(
            f"namespace 'cart' already exists ({file}); pass exist_ok=True (--exist-ok) to "
            "update it"
        ),
    ):
        create_namespace("cart", "second")
    # exist_ok updates: given keys replace, a None description keeps the stored one
    got = create_namespace("cart", exist_ok=True, team="rl")
    assert got == {"namespace": "cart", "description": "first", "maintainer": "ann", "team": "rl"}
    got = create_namespace("cart", "second", exist_ok=True, maintainer="bob")
    assert got == {"namespace": "cart", "description": "second", "maintainer": "bob", "team": "rl"}
    assert json.loads(file.read_text()) == got


@pytest.mark.parametrize(
    ("namespace", "why"),
    [
        ("../x", "is not valid"),
        ("a//b", "is not valid"),
        ("/abs", "is not valid"),
        ("a-v0", "looks like a dataset id; drop the -vN suffix"),
    ],
)
def test_create_namespace_invalid_names(namespace: str, why: str, datasets_root: Path) -> None:
    with pytest.raises(DatasetIdError, match=re.escape(f"namespace {namespace!r} {why}")):
        create_namespace(namespace)
    assert not datasets_root.exists() or not any(datasets_root.rglob("*.json"))


def test_create_namespace_inside_a_dataset(datasets_root: Path) -> None:
    cartpole("cart/a-v0")
    with pytest.raises(
        UsageError,
        match=re.escape(
            "namespace 'cart/a-v0/sub' would be inside dataset 'cart/a-v0'; a dataset cannot "
            "hold a namespace, pick another name"
        ),
    ):
        create_namespace("cart/a-v0/sub")
    with pytest.raises(DatasetIdError, match=re.escape("looks like a dataset id")):
        create_namespace("cart/a-v0")
    assert not (datasets_root / "cart" / "a-v0" / "sub").exists()


def test_create_namespace_bad_metadata(datasets_root: Path) -> None:
    with pytest.raises(UsageError, match=re.escape("'datasets' is listed from the folders")):
        create_namespace("cart", datasets=["x-v0"])
    with pytest.raises(UsageError, match=re.escape("namespace metadata must be strict JSON")):
        create_namespace("cart", score=float("nan"))
    with pytest.raises(UsageError, match=re.escape("namespace metadata must be strict JSON")):
        create_namespace("cart", thing=object())
    assert not namespace_file(datasets_root, "cart").exists()


def test_list_namespaces(datasets_root: Path) -> None:
    assert list_namespaces() == []
    cartpole("cart/a-v0")
    cartpole("deep/er/x-v0")
    cartpole("top-v0")
    create_namespace("cart")
    create_namespace("empty")
    create_namespace("solo/sub")
    expected = ["cart", "deep", "deep/er", "empty", "solo", "solo/sub"]
    assert list_namespaces() == expected
    assert list_namespaces(datasets_root) == expected


def test_list_namespaces_skips_invalid_folders(datasets_root: Path) -> None:
    create_namespace("cart")
    bad = datasets_root / "bad name"
    bad.mkdir()
    (bad / storage.NAMESPACE_METADATA_FILE).write_text("{}")
    with pytest.warns(HarvestWarning, match=re.escape(f"skipping {bad}: namespace 'bad name'")):
        assert list_namespaces() == ["cart"]


def test_get_namespace_metadata() -> None:
    cartpole("cart/a-v0")
    cartpole("cart/sub/b-v0")
    cartpole("deep/er/x-v0")
    cartpole("cartography-v0")  # shares a prefix, not a namespace
    create_namespace("cart", "CartPole runs", maintainer="ann")
    create_namespace("solo/sub")
    assert get_namespace_metadata("cart") == {
        "namespace": "cart",
        "description": "CartPole runs",
        "maintainer": "ann",
        "datasets": ["cart/a-v0", "cart/sub/b-v0"],
    }
    assert get_namespace_metadata("cart/sub")["datasets"] == ["cart/sub/b-v0"]
    assert get_namespace_metadata("deep") == {
        "namespace": "deep",
        "description": None,
        "datasets": ["deep/er/x-v0"],
    }
    assert get_namespace_metadata("solo") == {
        "namespace": "solo",
        "description": None,
        "datasets": [],
    }


def test_get_namespace_metadata_minari_file(datasets_root: Path) -> None:
    """Minari writes arbitrary JSON, often ``{}``; a non-object is refused."""
    file = namespace_file(datasets_root, "mini")
    file.parent.mkdir(parents=True)
    file.write_text("{}")
    assert get_namespace_metadata("mini") == {
        "namespace": "mini",
        "description": None,
        "datasets": [],
    }
    file.write_text("[1, 2]")
    with pytest.raises(CorruptDatasetError, match=re.escape(f"{file} does not hold a JSON")):
        get_namespace_metadata("mini")
    file.write_text("{nope")
    with pytest.raises(CorruptDatasetError, match=re.escape(f"{file} is not UTF-8 JSON")):
        get_namespace_metadata("mini")


def test_missing_namespace(datasets_root: Path) -> None:
    cartpole("cart/a-v0")
    with pytest.raises(
        DatasetNotFoundError,
        match=re.escape(
            f"no namespace 'nope' under {datasets_root} (no namespace_metadata.json, no "
            "datasets); create it with `curate namespace create nope`"
        ),
    ):
        get_namespace_metadata("nope")
    with pytest.raises(DatasetNotFoundError, match=re.escape("no namespace 'nope'")):
        describe_namespace("nope")
    with pytest.raises(DatasetIdError, match=re.escape("namespace '../x' is not valid")):
        get_namespace_metadata("../x")


def test_describe_namespace() -> None:
    cartpole("cart/a-v0")
    cartpole("cart/b-v0", episodes=4, seed=1)
    create_namespace("cart", "CartPole runs", maintainer="ann", tags=["rl", "toy"])
    text = describe_namespace("cart")
    assert "\x1b" not in text
    lines = text.splitlines()
    assert lines[0] == "Namespace cart"
    assert fields(lines[1]) == ["description", "CartPole runs"]
    assert fields(line_with(text, "maintainer")) == ["maintainer", "ann"]
    assert fields(line_with(text, "tags")) == ["tags", "rl, toy"]
    assert "Datasets in cart" in text
    assert re.search(r"│ cart/a-v0 +│ +6 │", text) and re.search(r"│ cart/b-v0 +│ +4 │", text)
    assert "Number of datasets: 2, total size:" in text and text.endswith(" kB\n")
    create_namespace("empty")
    assert describe_namespace("empty") == (
        "Namespace empty\n  description  (none)\n\nNo datasets in namespace empty\n"
    )


def test_list_local_datasets_ignores_namespace_files(datasets_root: Path) -> None:
    cartpole("cart/a-v0")
    create_namespace("cart", "CartPole runs")
    create_namespace("empty/deeper")
    create_namespace("top")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list(list_local_datasets()) == ["cart/a-v0"]
    assert namespace_file(datasets_root, "empty/deeper").is_file()
    assert load_dataset("cart/a-v0").total_episodes == 6


def test_text_ignores_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [{"name": "a-v0", "episodes": 1, "steps": 2, "size": 3, "author": "ann"}]
    plain = render_table(rows, "t")
    for name, value in {
        "FORCE_COLOR": "1",
        "TTY_COMPATIBLE": "1",
        "TERM": "xterm-256color",
        "COLUMNS": "30",
        "NO_COLOR": "",
    }.items():
        monkeypatch.setenv(name, value)
    assert render_table(rows, "t") == plain
    assert "\x1b" not in plain and plain.endswith("\n")
