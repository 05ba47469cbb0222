"""Issue 16 item 11: a recipe (or any config YAML) cannot expand beyond a small bound.

A 352-byte "billion laughs" recipe took 50-100 s in OmegaConf; it must be refused at once.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from curation.cli import main

LAUGHS = "\n".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(
            f"{x}: &{x} [{','.join(['*' + p] * 9)}]"
            for p, x in zip("abcdefgh", "bcdefghi", strict=True)
        ),
        "steps: []",
    ]
)


def test_a_billion_laughs_recipe_is_refused_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "conf" / "recipe"
    conf.mkdir(parents=True)
    (conf / "laughs.yaml").write_text(LAUGHS)
    assert len(LAUGHS) < 400
    monkeypatch.chdir(tmp_path)
    code = main([f"--config-dir={tmp_path / 'conf'}", "recipe=laughs", "hydra.output_subdir=null"])
    _, err = capsys.readouterr()
    assert code == 2, err
    line = err.strip()
    assert line.count("\n") == 0, err
    assert "laughs.yaml" in line and "aliases" in line and "expands to more than" in line


def test_a_huge_recipe_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "conf" / "recipe"
    conf.mkdir(parents=True)
    (conf / "big.yaml").write_text("description: " + "x" * (2 << 20) + "\nsteps: []\n")
    monkeypatch.chdir(tmp_path)
    code = main([f"--config-dir={tmp_path / 'conf'}", "recipe=big", "hydra.output_subdir=null"])
    _, err = capsys.readouterr()
    assert code == 2, err
    assert "big.yaml" in err and "larger than" in err and err.strip().count("\n") == 0


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("steps: " + "[" * 20_000 + "]" * 20_000, "nests deeper than 100 levels"),
        ("steps: " + "[" * 150 + "]" * 150, "nests deeper than 100 levels"),
        ("a: &a [*a]\nsteps: []", "refers to itself through an alias"),
    ],
)
def test_deep_and_recursive_recipes_are_refused(
    text: str,
    why: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    conf = tmp_path / "conf" / "recipe"
    conf.mkdir(parents=True)
    (conf / "odd.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    code = main([f"--config-dir={tmp_path / 'conf'}", "recipe=odd", "hydra.output_subdir=null"])
    _, err = capsys.readouterr()
    assert code == 2, err
    assert "odd.yaml" in err and why in err and err.strip().count("\n") == 0


def test_a_few_aliases_are_fine(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from collector.yaml_limits import install_yaml_limits

    install_yaml_limits()
    path = tmp_path / "ok.yaml"
    path.write_text("base: &base {sizes: [0.5, 0.5]}\nsplit: *base\n")
    assert OmegaConf.to_container(OmegaConf.load(path)) == {
        "base": {"sizes": [0.5, 0.5]},
        "split": {"sizes": [0.5, 0.5]},
    }


def test_collect_refuses_a_billion_laughs_experiment(tmp_path: Path) -> None:
    import subprocess
    import sys

    from helpers import CLI, cli_env

    conf = tmp_path / "conf" / "experiment"
    conf.mkdir(parents=True)
    (conf / "laughs.yaml").write_text("# @package _global_\n" + LAUGHS)
    proc = subprocess.run(
        [sys.executable, "-c", CLI, f"--config-dir={tmp_path / 'conf'}", "+experiment=laughs"],
        env=cli_env(tmp_path / "datasets"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("collect: error: config ") and proc.stderr.count("\n") == 1
    assert "laughs.yaml expands to more than" in proc.stderr
