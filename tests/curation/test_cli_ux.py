"""``curate`` telling the truth: config dirs, recipe syntax errors, dry runs, namespaces, seeds."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import collect_cartpole

from curation.cli import main

HYDRA = ["hydra.run.dir=runs/test-curate", "hydra.output_subdir=null"]


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
