"""Tests for the ``curate`` command: each subcommand through ``main(argv)``, and once for real.

``main`` returns the exit code when given ``argv`` (the console script exits with it).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import cli_env

from collector import storage
from collector.collect import collect
from curation.api import load_dataset
from curation.cli import main


def cartpole(dataset_id: str, episodes: int = 10, **kw: Any) -> str:
    cfg: dict[str, Any] = {
        "env": "CartPole-v1",
        "episodes": episodes,
        "seed": 0,
        "dataset_id": dataset_id,
        "policy": {"_target_": "collector.policies.RandomPolicy"},
    }
    cfg.update(kw)
    collect(cfg)
    return dataset_id


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_every_subcommand_and_the_recipe_forms(capsys: pytest.CaptureFixture) -> None:
    code, out, _ = run(capsys)
    assert code == 0
    for command in ("combine", "filter", "split", "list", "show", "verify", "delete", "report",
                    "namespace", "recipe"):  # fmt: skip
        assert re.search(rf"^    {command}\s+\S", out, re.M), command
    assert "curate recipe=NAME [KEY=VALUE ...] [--dry-run]" in out
    assert "return >= 200 and length < 500" in out
    with pytest.raises(SystemExit) as info:
        main(["split", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--sizes SIZES" in out and "--names NAMES" in out and "--seed SEED" in out


def test_combine_filter_split_show_verify(capsys: pytest.CaptureFixture) -> None:
    a, b = cartpole("cart/a-v0", 10), cartpole("cart/b-v0", 6, seed=1)
    code, out, _ = run(capsys, "combine", a, b, "--into", "cart/ab-v0", "--description", "both")
    assert code == 0
    assert out.startswith("cart/ab-v0: 16 episodes, ")
    assert load_dataset("cart/ab-v0").metadata["description"] == "both"

    code, out, _ = run(capsys, "filter", "cart/ab-v0", "--where", "return >= 20", "--dry-run")
    want = load_dataset("cart/ab-v0").filter_episodes("return >= 20")
    assert code == 0
    assert out.startswith(f"cart/ab-v0 where return >= 20: {want.total_episodes} episodes")
    assert not storage.dataset_path("cart/good-v0").exists()
    code, out, _ = run(capsys, "filter", "cart/ab-v0", "--where", "return >= 20", "--into",
                       "cart/good-v0")  # fmt: skip
    assert code == 0 and load_dataset("cart/good-v0").total_episodes == want.total_episodes

    code, out, _ = run(capsys, "split", "cart/ab-v0", "--sizes", "0.75,0.25", "--names",
                       "train,val", "--seed", "3")  # fmt: skip
    assert code == 0
    assert out.splitlines() == [
        "cart/ab-train-v0: 12 episodes, " + out.splitlines()[0].split(", ")[1],
        "cart/ab-val-v0: 4 episodes, " + out.splitlines()[1].split(", ")[1],
    ]
    steps = load_dataset("cart/ab-val-v0").metadata["lineage"]["sources"][0]["steps"]
    assert steps == [{"name": "split", "sizes": [0.75, 0.25], "seed": 3, "part": 1}]

    code, out, _ = run(capsys, "show", "cart/ab-val-v0")
    assert code == 0 and "cart/ab-val-v0" in out and "split" in out
    code, out, _ = run(capsys, "show", "cart/ab-val-v0", "--json")
    assert json.loads(out)["total_episodes"] == 4

    code, out, _ = run(capsys, "verify", "cart/ab-v0", "cart/ab-val-v0")
    assert code == 0
    assert out.startswith("cart/ab-v0: ok (16 episodes, ")


def test_verify_exits_1_and_names_the_damaged_shard(capsys: pytest.CaptureFixture) -> None:
    a = cartpole("cart/a-v0", 5)
    data_dir = storage.dataset_path(a) / storage.DATA_DIR
    shard = next(p for p in data_dir.iterdir() if storage.SHARD_RE.match(p.name))
    shard.chmod(0o644)
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    code, out, _ = run(capsys, "verify", a)
    assert code == 1
    assert out.splitlines() == [
        f"{a}: 1 problem(s)",
        f"  {shard.name}: sha256 mismatch (file changed or corrupt)",
    ]


def test_list_json_and_table(capsys: pytest.CaptureFixture, datasets_root: Path) -> None:
    cartpole("cart/a-v0", 3)
    cartpole("cart/b-v0", 2)
    code, out, _ = run(capsys, "list", "--json")
    assert code == 0
    rows = json.loads(out)
    assert [(r["name"], r["episodes"]) for r in rows] == [("cart/a-v0", 3), ("cart/b-v0", 2)]
    code, out, _ = run(capsys, "list")
    assert code == 0 and "cart/a-v0" in out and "Number of datasets: 2" in out
    code, _, err = run(capsys, "list", "remote")
    assert code == 2
    assert (
        err.startswith("curate: error: no remote given: pass --remote URI") and err.count("\n") == 1
    )
    code, _, err = run(capsys, "list", "elsewhere")
    assert code == 2 and "use local, remote or a remote URI" in err


def test_errors_are_one_line_with_exit_codes(capsys: pytest.CaptureFixture) -> None:
    a = cartpole("cart/a-v0", 3)
    cartpole("cart/p-v0", 2, env="Pendulum-v1")
    code, _, err = run(capsys, "show", "cart/none-v0")
    assert code == 1 and err.startswith("curate: error: ") and err.count("\n") == 1
    code, _, err = run(capsys, "filter", a, "--where", "retrun > 1", "--into", "cart/f-v0")
    assert code == 2
    assert "unknown field 'retrun' at column 1 (did you mean 'return'?" in err
    assert err.count("\n") == 1
    code, _, err = run(capsys, "combine", a, "cart/p-v0", "--into", "cart/x-v0")
    assert code == 2
    assert err.startswith("curate: error: cannot combine cart/a-v0, cart/p-v0 into 'cart/x-v0': ")
    assert "observation_space.shape: [4] != [3] (cart/a-v0 vs cart/p-v0)" in err
    code, _, err = run(capsys, "split", a, "--sizes", "0.8,x")
    assert code == 2 and "'x' is not a number" in err
    with pytest.raises(SystemExit):
        main(["filter", a])  # argparse: --where is required
    assert "--where" in capsys.readouterr().err


def test_delete_asks_on_a_terminal_and_refuses_without_one(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = cartpole("cart/a-v0", 2), cartpole("cart/b-v0", 2)

    class Stdin:
        def __init__(self, tty: bool) -> None:
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

    monkeypatch.setattr(sys, "stdin", Stdin(False))  # e.g. CI: no one to ask
    code, _, err = run(capsys, "delete", a)
    assert code == 2 and "pass --yes" in err
    assert (storage.dataset_path(a) / storage.METADATA_FILE).exists()
    monkeypatch.setattr(sys, "stdin", Stdin(True))
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    code, out, _ = run(capsys, "delete", a)
    assert code == 1 and "nothing deleted" in out
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    code, out, _ = run(capsys, "delete", a)
    assert code == 0 and f"deleted {a}" in out
    assert not storage.dataset_path(a).exists()
    code, _, err = run(capsys, "delete", b, "cart/none-v0", "--yes")
    assert code == 1 and "cart/none-v0" in err
    assert (storage.dataset_path(b) / storage.METADATA_FILE).exists()  # all exist, or nothing goes
    code, _, _ = run(capsys, "delete", b, "--yes")
    assert code == 0 and not storage.dataset_path(b).exists()


def test_report_and_namespaces(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    a, b = cartpole("cart/a-v0", 6), cartpole("cart/b-v0", 6, seed=2)
    run(capsys, "combine", a, b, "--into", "cart/ab-v0")
    out_png = tmp_path / "report.png"
    code, out, _ = run(capsys, "report", "cart/ab-v0", "--out", str(out_png))
    assert code == 0 and out.strip() == f"wrote {out_png}"
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    code, out, _ = run(capsys, "namespace", "create", "robots", "--description", "arms")
    assert code == 0
    code, _, err = run(capsys, "namespace", "create", "robots")
    assert code == 1 and "pass exist_ok=True (--exist-ok) to update it" in err
    code, _, _ = run(capsys, "namespace", "create", "robots", "--exist-ok")
    assert code == 0
    code, out, _ = run(capsys, "namespace", "list", "--json")
    assert json.loads(out) == ["cart", "robots"]
    code, out, _ = run(capsys, "namespace", "show", "cart", "--json")
    assert json.loads(out)["datasets"] == ["cart/a-v0", "cart/ab-v0", "cart/b-v0"]
    code, out, _ = run(capsys, "namespace", "show", "robots")
    assert code == 0 and "arms" in out
    code, _, err = run(capsys, "namespace", "create", "../up")
    assert code == 2 and "namespace '../up' is not valid" in err


def test_recipe_forms_through_hydra(capsys: pytest.CaptureFixture) -> None:
    cartpole("cartpole/random-v0", 30)
    heuristic = {"_target_": "collector.policies.CartPoleHeuristic"}
    cartpole("cartpole/heuristic-v0", 3, policy=heuristic, max_episode_steps=50)
    hydra_dir = ["hydra.run.dir=runs/test-curate", "hydra.output_subdir=null"]
    code, out, _ = run(capsys, "recipe=cartpole_mix", "--dry-run", *hydra_dir)
    assert code == 0
    assert out.splitlines()[0] == "recipe cartpole_mix:"
    assert out.rstrip().endswith("dry run: nothing written")
    assert not storage.dataset_path("cartpole/mix-s0-train-v0").exists()
    code, out2, _ = run(capsys, "recipe", "cartpole_mix", *hydra_dir)
    assert code == 0 and out2.rstrip().endswith("wrote 3 dataset(s)")
    assert out2.splitlines()[:-1] == out.splitlines()[:-1]  # the dry run planned it exactly
    code, _, err = run(capsys, "recipe=cartpole_mix", *hydra_dir)
    assert code == 1 and "already exists" in err and "pass overwrite=true" in err
    code, _, err = run(
        capsys, "recipe=cartpole_mix", "recipe.steps.1.filter='retrun > 1'", *hydra_dir
    )
    assert code == 2 and "unknown field 'retrun'" in err
    code, _, err = run(capsys, *hydra_dir)
    assert code == 2 and "no recipe given; use curate recipe=NAME (shipped: cartpole_mix)" in err


@pytest.mark.slow
def test_real_subprocess_multirun_and_list(datasets_root: Path, tmp_path: Path) -> None:
    cartpole("cartpole/random-v0", 30)
    heuristic = {"_target_": "collector.policies.CartPoleHeuristic"}
    cartpole("cartpole/heuristic-v0", 3, policy=heuristic, max_episode_steps=50)
    env = cli_env(datasets_root)  # this checkout's code, wherever harvest is installed
    code = "import sys; from curation.cli import main; sys.argv[0] = 'curate'; main()"

    def curate(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                              text=True, env=env, cwd=tmp_path, timeout=120,
                              stdin=subprocess.DEVNULL)  # fmt: skip

    proc = curate("-m", "recipe=cartpole_mix", "recipe.seed=0,1")
    assert proc.returncode == 0, proc.stderr
    for seed in (0, 1):
        assert load_dataset(f"cartpole/mix-s{seed}-val-v0").total_episodes > 0
    assert (tmp_path / "runs" / "curate" / "multirun").is_dir()
    proc = curate("list", "--json")
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)) == 8
    proc = curate("show", "cartpole/none-v0")
    assert proc.returncode == 1
    assert proc.stderr.startswith("curate: error: ") and proc.stderr.count("\n") == 1
