"""``curate`` telling the truth: config dirs, recipe syntax errors, dry runs, namespaces, seeds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import collect_cartpole

from collector import storage
from curation.api import load_dataset
from curation.cli import main

HYDRA = ["hydra.run.dir=runs/test-curate", "hydra.output_subdir=null"]


@pytest.fixture(autouse=True)
def _hydra_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs land in ``tmp_path`` (conftest closes the log handlers Hydra adds)."""
    monkeypatch.chdir(tmp_path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def recipe_dir(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / "my-conf"
    (folder / "recipe").mkdir(parents=True)
    (folder / "recipe" / "mine.yaml").write_text(text)
    return folder


TINY = """\
sources: {a: cart/a-v0}
steps:
  - filter: "return >= 0"
outputs: {a: cart/a-all-v0}
"""


@pytest.mark.parametrize(
    "form", ["--config-dir=DIR recipe=mine H", "--config-dir DIR recipe=mine H",
             "-cd DIR recipe=mine H", "recipe mine H --config-dir DIR"],
)  # fmt: skip
def test_a_config_dir_is_accepted_with_or_without_an_equals_sign(
    form: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Issue 16 item 21: the documented ``curate --config-dir DIR recipe=NAME`` failed."""
    collect_cartpole("cart/a-v0", 4)
    folder = recipe_dir(tmp_path, TINY)
    words = form.replace("H", " ".join(HYDRA)).replace("DIR", str(folder)).split(" ")
    code, out, err = run(capsys, *words, "--dry-run")
    assert code == 0, err
    assert out.splitlines()[0] == "recipe mine:" and "source a: cart/a-v0 (4 episodes" in out


def test_a_recipe_yaml_syntax_error_is_one_line_with_file_line_and_column(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Issue 16 item 21: a 70-line traceback."""
    folder = recipe_dir(tmp_path, "seed: 0\nsources: {a: x/y-v0\nsteps: [}\n")
    code, out, err = run(capsys, f"--config-dir={folder}", "recipe=mine", *HYDRA)
    assert code == 2 and out == ""
    path = folder / "recipe" / "mine.yaml"
    assert err.splitlines() == [
        f"curate: error: recipe mine: {path}:3:6: YAML syntax error: expected ',' or '}}', "
        "but got ':'; fix the file"
    ]


def test_filter_dry_run_with_into_says_what_it_would_save(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 16 item 22: it said "pass --into" when --into was passed."""
    collect_cartpole("cart/a-v0", 6)
    code, out, _ = run(capsys, "filter", "cart/a-v0", "--where", "id < 2", "--into",
                       "cart/b-v0", "--dry-run")  # fmt: skip
    assert code == 0
    assert out.strip() == (
        "cart/a-v0 where id < 2: 2 episodes, "
        f"{sum(len(load_dataset('cart/a-v0')[i]) for i in (0, 1)):,} steps "
        "(dry run: would save cart/b-v0)"
    )
    assert "pass --into" not in out and not storage.dataset_path("cart/b-v0").exists()
    code, out, _ = run(capsys, "filter", "cart/a-v0", "--where", "id < 2")
    assert code == 0 and out.rstrip().endswith("(not saved: pass --into NEW_ID)")


def test_filter_into_an_empty_selection_is_refused_like_a_recipe_output(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 16 item 22: an empty dataset was saved."""
    collect_cartpole("cart/a-v0", 4)
    code, _, err = run(capsys, "filter", "cart/a-v0", "--where", "return < 0", "--into",
                       "cart/none-v0")  # fmt: skip
    assert code == 2
    assert err == (
        "curate: error: cart/a-v0 where return < 0: no episodes match; nothing saved "
        "(loosen the expression)\n"
    )
    assert not storage.dataset_path("cart/none-v0").exists()


def test_namespace_create_exist_ok_says_updated_when_it_existed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 16 item 22: it said "created" for an existing namespace."""
    assert run(capsys, "namespace", "create", "robots", "--exist-ok")[1] == (
        "created namespace robots\n"
    )
    code, out, _ = run(capsys, "namespace", "create", "robots", "--description", "arms",
                       "--exist-ok")  # fmt: skip
    assert code == 0 and out == "updated namespace robots\n"


def test_split_without_a_seed_draws_records_and_prints_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 16 item 22: the lineage said seed None, so the split could not be repeated."""
    collect_cartpole("cart/a-v0", 10)
    code, out, _ = run(capsys, "split", "cart/a-v0", "--sizes", "0.5,0.5", "--names", "x,y")
    assert code == 0, out
    match = re.search(r"^seed (\d+) \(drawn; pass --seed \1 to repeat this split\)$", out, re.M)
    assert match, out
    seed = int(match.group(1))
    (source,) = load_dataset("cart/a-x-v0").metadata["lineage"]["sources"]
    steps = source["steps"]
    assert [s["seed"] for s in steps if s.get("name") == "split"] == [seed]
    again = [f"cart/a-{n}-v0" for n in ("x", "y")]
    first = [load_dataset(i).episode_sources()["source_id"].tolist() for i in again]
    code, _, _ = run(capsys, "split", "cart/a-v0", "--sizes", "0.5,0.5", "--names", "x,y",
                     "--seed", str(seed), "--overwrite")  # fmt: skip
    assert code == 0
    assert [load_dataset(i).episode_sources()["source_id"].tolist() for i in again] == first
