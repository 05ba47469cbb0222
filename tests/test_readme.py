"""The README's examples run in the order written, on a fresh datasets root (issue 16 item 22).

Shell blocks (``sh``, and ``$`` lines of ``console`` blocks) run through the real ``collect``
and ``curate`` entry points; ``python`` blocks run in one namespace, in order, between them. A
console block's shown output must be what the command prints. Skipped, and why: ``make``
(builds the venv), placeholders (``my_pkg``), ``runner=ray`` (a million steps; the Ray tests
cover it), the Minari block (needs D4RL's data) and the Atari and MuJoCo lines (whole episodes
of pixels; ``tests/collector/test_wrappers.py`` runs them small).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from helpers import REPO, cli_env

README = REPO / "README.md"
ENTRY = {
    name: f"import sys; from {pkg}.cli import main; sys.argv[0] = {name!r}; main()"
    for name, pkg in (("collect", "collector"), ("curate", "curation"))
}
#: ALE and MuJoCo runs are long here; tests/collector/test_wrappers.py runs them small
SKIP = ("my_pkg", "runner=ray", "D4RL/", "ALE/", "pong84", "HalfCheetah")


def blocks(text: str) -> list[tuple[str, str]]:
    """``(language, body)`` of every fenced block, in order."""
    return re.findall(r"^```(\w*)\n(.*?)^```$", text, re.M | re.S)


def steps(text: str) -> list[tuple[str, str, list[str]]]:
    """``("sh", command, expected output lines)`` and ``("python", code, [])``, in order."""
    out: list[tuple[str, str, list[str]]] = []
    for lang, body in blocks(text):
        if lang == "python":
            out.append(("python", body, []))
        elif lang == "sh":
            for line in body.splitlines():
                command = line.split(" #")[0].strip()
                if command:
                    out.append(("sh", command, []))
        elif lang == "console":
            for chunk in re.split(r"^\$ ", body, flags=re.M)[1:]:
                command, *shown = chunk.rstrip("\n").split("\n")
                for part in command.split("&&"):
                    out.append(("sh", part.strip(), []))
                out[-1][2].extend(shown)
    return out


def test_the_curate_example_comes_after_the_commands_that_make_its_datasets() -> None:
    """The fast half: the Curate example read datasets made 100 lines later."""
    found = [code for _, code, _ in steps(README.read_text())]
    curate = next(i for i, code in enumerate(found) if "combine_datasets([random" in code)
    for command in (
        "collect +experiment=cartpole_random",
        "collect +experiment=cartpole_heuristic",
    ):
        assert found.index(command) < curate, command
    assert found.index("curate recipe=cartpole_mix") < found.index(
        "curate -m recipe=cartpole_mix recipe.seed=1,2"
    )


@pytest.mark.slow
def test_every_readme_example_runs_top_to_bottom_on_a_fresh_root(
    datasets_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    monkeypatch.chdir(tmp_path)  # Hydra's runs/ land here
    system_temp = Path(tempfile.gettempdir())
    leftovers = set(system_temp.glob("SB3-*"))
    # the examples' temp files land here too: the PPO example's default SB3 logger made a
    # /tmp/SB3-<time> folder on every run of the suite
    (tmp_path / "temp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "temp"))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "temp"))
    namespace: dict[str, object] = {"__name__": "readme"}
    ran = 0
    for kind, code, shown in steps(README.read_text().replace("/tmp/shared", str(shared))):
        if any(s in code for s in SKIP):
            continue
        if kind == "python":
            exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
            ran += 1
            continue
        name, *args = shlex.split(code)
        if name not in ENTRY:
            assert name == "make", code  # the only other commands: they build the venv
            continue
        proc = subprocess.run(
            [sys.executable, "-c", ENTRY[name], *args],
            capture_output=True, text=True, timeout=300, env=cli_env(datasets_root),
            cwd=tmp_path, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert proc.returncode == 0, f"{code}\n{proc.stderr}"
        if shown:
            assert proc.stdout.splitlines() == shown, code
        ran += 1
    assert ran >= 15
    assert set(system_temp.glob("SB3-*")) == leftovers  # nothing left outside tmp_path
