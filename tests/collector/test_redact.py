"""Issue 16 item 10: secrets in config, overrides and remote URIs are never written or printed.

Each leak path of the issue runs for real (the ``collect`` and ``curate`` command lines in a
subprocess, a push to a file:// remote, the Hub card) and then every file under the dataset
folder, the Hydra run folder and the remote, and stdout/stderr, are searched for the secret.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import CLI, PYTHONPATH, cli_env

from collector.redact import redact, redact_url

SECRET = "sk-h5trustSECRET0123456789"
URL_SECRET = "tok3nSECRETxyz"

POLICY = """
from collector.policies import RandomPolicy


class KeyedPolicy(RandomPolicy):
    def __init__(self, action_space, api_key=None, access_token=None):
        super().__init__(action_space)
        assert api_key == "sk-h5trustSECRET0123456789", api_key  # the policy gets the real key
"""


def files_holding(secret: str, *folders: Path) -> list[str]:
    """Every file under ``folders`` whose bytes contain ``secret``."""
    hits = []
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file() and secret.encode() in path.read_bytes():
                hits.append(str(path))
    return hits


def run(tmp_path: Path, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = cli_env(tmp_path / "datasets")
    env["PYTHONPATH"] = f"{tmp_path / 'code'}:{PYTHONPATH}"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


CURATE = "import sys; from curation.cli import main; sys.argv[0] = 'curate'; main()"


def test_redact_nested_config_overrides_and_urls() -> None:
    config = {
        "policy": {"_target_": "x.P", "api_key": SECRET, "Auth_Token": 7, "author": "me"},
        "metadata": {"author": "Ann", "author_email": "a@b.c", "description": "see below"},
        "env_kwargs": {"PASSWORD": "hunter2", "credentials": {"user": "u", "pass": "p"}},
        "remote": f"https://user:{URL_SECRET}@example.org/x",
        "overrides": [f"+policy.api_key={SECRET}", "episodes=3", f"++db.passwd={SECRET}"],
        "notes": f"pushed to gcp://me:{URL_SECRET}@bucket/p and hf://org",
        "max_tokens": 16,
    }
    out = redact(config)
    assert SECRET not in repr(out) and URL_SECRET not in repr(out) and "hunter2" not in repr(out)
    assert out["policy"] == {
        "_target_": "x.P",
        "api_key": "***",
        "Auth_Token": "***",
        "author": "me",
    }
    assert out["metadata"] == config["metadata"]
    assert out["env_kwargs"] == {"PASSWORD": "***", "credentials": "***"}
    assert out["remote"] == "https://***@example.org/x"
    assert out["overrides"] == ["+policy.api_key=***", "episodes=3", "++db.passwd=***"]
    assert out["notes"] == "pushed to gcp://***@bucket/p and hf://org"
    assert out["max_tokens"] == 16
    assert config["policy"]["api_key"] == SECRET  # the input is not changed
    # Hydra's override_dirname joins overrides with commas; the secret may be in the middle
    assert redact(f"dataset_id=x,+policy.api_key={SECRET},episodes=2") == (
        "dataset_id=x,+policy.api_key=***,episodes=2"
    )
    assert redact(f"https://h/x?page=2&access_token={SECRET}&b=1") == (
        "https://h/x?page=2&access_token=***&b=1"
    )
    assert redact_url("file:///data/x-v0 and user@example.org") == (
        "file:///data/x-v0 and user@example.org"
    )


def test_collect_with_a_secret_policy_key_writes_and_pushes_no_secret(tmp_path: Path) -> None:
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "keyed_policy.py").write_text(POLICY)
    (tmp_path / "remote").mkdir()
    args = (
        "env=CartPole-v1",
        "episodes=2",
        "dataset_id=keyed/cart-v0",
        "policy._target_=keyed_policy.KeyedPolicy",
        f"+policy.api_key={SECRET}",
        f"metadata.description='from https://user:{URL_SECRET}@example.org/notes'",
    )
    proc = run(tmp_path, CLI, *args)
    assert proc.returncode == 0, proc.stderr
    # a resume with the same secret is the same config (the stored one is redacted)
    again = run(tmp_path, CLI, *args)
    assert again.returncode == 0, again.stderr
    assert "already complete" in again.stdout
    push = run(tmp_path, CURATE, "push", "keyed/cart-v0", "--remote", f"file://{tmp_path}/remote")
    assert push.returncode == 0, push.stderr
    assert (tmp_path / "runs").is_dir()
    assert (tmp_path / "remote" / "keyed" / "cart-v0" / "metadata.json").is_file()
    for secret in (SECRET, URL_SECRET):
        assert (
            files_holding(secret, tmp_path / "datasets", tmp_path / "runs", tmp_path / "remote")
            == []
        )
        for p in (proc, again, push):
            assert secret not in p.stdout + p.stderr
    meta = (tmp_path / "datasets" / "keyed" / "cart-v0" / "metadata.json").read_text()
    assert '"api_key": "***"' in meta and "+policy.api_key=***" in meta


def test_a_remote_with_credentials_is_never_echoed(tmp_path: Path) -> None:
    remote = f"gcp://user:{URL_SECRET}@bucket/prefix"
    push = run(tmp_path, CURATE, "push", "any/x-v0", "--remote", remote)
    assert push.returncode == 2
    assert push.stderr.count("\n") == 1
    assert "gcp://***@bucket/prefix" in push.stderr and "credentials" in push.stderr
    recipe = run(tmp_path, CURATE, "recipe=cartpole_mix", "--dry-run", f"remote={remote}")
    assert recipe.returncode != 0
    assert (tmp_path / "runs").is_dir()
    for p in (push, recipe):
        assert URL_SECRET not in p.stdout + p.stderr
    assert files_holding(URL_SECRET, tmp_path) == []


def test_the_card_redacts_url_credentials() -> None:
    from curation.remotes.card import dataset_card

    meta = {
        "total_episodes": 1,
        "total_steps": 10,
        "description": f"mirror of https://user:{URL_SECRET}@example.org/data",
        "code_permalink": f"https://{URL_SECRET}@github.com/me/repo",
        "provenance": {
            "command": "collect",
            "config": {"env": "CartPole-v1", "source": f"https://u:{URL_SECRET}@h/x"},
            "overrides": [f"+policy.api_key={SECRET}", f"src=https://u:{URL_SECRET}@h/x"],
        },
    }
    card = dataset_card("org/cart", {"cart/x-v0": meta})
    assert URL_SECRET not in card and SECRET not in card
    assert "https://***@example.org/data" in card


@pytest.mark.parametrize("scheme", ["gcp", "hf", "file"])
def test_open_remote_refuses_credentials_in_the_uri(scheme: str) -> None:
    from collector.errors import UsageError
    from curation.remotes import open_remote

    with pytest.raises(UsageError) as info:
        open_remote(f"{scheme}://me:{URL_SECRET}@where/p")
    assert URL_SECRET not in str(info.value) and f"{scheme}://***@where/p" in str(info.value)


def test_curate_show_of_a_foreign_dataset_prints_no_secret(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from helpers import collect_cartpole

    from collector import storage
    from curation.cli import main

    collect_cartpole("foreign/cart-v0", episodes=1)
    with storage.DatasetWriter(
        "foreign/cart-v0"
    ) as writer:  # as a manifest from elsewhere holds it
        assert writer.meta is not None
        prov = writer.meta["provenance"]
        prov["overrides"] = [f"+policy.api_key={SECRET}", f"src=https://u:{URL_SECRET}@h/x"]
        spec = dict(writer.meta["env_spec"], kwargs={"api_token": SECRET})
        writer.commit(provenance=prov, env_spec=spec)
    assert SECRET in storage.dataset_path("foreign/cart-v0").joinpath("metadata.json").read_text()
    assert main(["show", "foreign/cart-v0"]) == 0
    out, err = capsys.readouterr()
    assert "+policy.api_key=***" in out
    assert SECRET not in out + err and URL_SECRET not in out + err


def test_a_multirun_logs_and_writes_no_secret(tmp_path: Path) -> None:
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "keyed_policy.py").write_text(POLICY)
    proc = run(
        tmp_path,
        CLI,
        "-m",
        "env=CartPole-v1",
        "episodes=1",
        "seed=0,1",
        "dataset_id=keyed/s${seed}-v0",
        "policy._target_=keyed_policy.KeyedPolicy",
        f"+policy.api_key={SECRET}",
    )
    assert proc.returncode == 0, proc.stderr
    assert "+policy.api_key=***" in proc.stdout + proc.stderr  # Hydra's launcher log line
    assert (tmp_path / "runs" / "multirun").is_dir()
    assert SECRET not in proc.stdout + proc.stderr
    assert files_holding(SECRET, tmp_path / "datasets", tmp_path / "runs") == []
