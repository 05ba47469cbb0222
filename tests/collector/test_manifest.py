"""metadata.json as hostile input: its checksum, its schema, and what listings do with bad ones.

Issue 16 items 5 (every one-bit flip of a sealed manifest is refused or changes nothing), 6
(hostile manifests are one HarvestError line, never a traceback; a listing skips them) and 18
(a manifest naming one shard twice, or overlapping ids, is refused).
"""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import collect_cartpole, record_cartpole
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector import storage
from collector.errors import CorruptDatasetError, FormatVersionError, HarvestError
from curation.api import load_dataset
from curation.catalog import list_local_datasets
from curation.cli import main as curate
from curation.remotes import open_remote, pull_dataset

DATASET = "cart/a-v0"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-episode CartPole dataset (Box observations) under its own root."""
    root = tmp_path_factory.mktemp("pristine")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HARVEST_DATASETS", str(root))
        record_cartpole(DATASET, 3)
    return root


def install(pristine: Path, root: Path, dataset_id: str = DATASET) -> Path:
    dest = root / dataset_id
    shutil.copytree(pristine / DATASET, dest)
    (dest / storage.METADATA_FILE).chmod(0o644)
    return dest


def put_manifest(folder: Path, data: bytes) -> None:
    file = folder / storage.METADATA_FILE
    file.unlink(missing_ok=True)
    file.write_bytes(data)


def one_line(err: BaseException) -> str:
    text = str(err)
    assert text and "\n" not in text, repr(text)
    return text


# ------------------------------------------------------------------------------------------
# item 5: the manifest's checksum


def test_a_new_manifest_is_sealed(pristine: Path) -> None:
    meta = json.loads((pristine / DATASET / storage.METADATA_FILE).read_bytes())
    assert meta["format_version"] == storage.FORMAT_VERSION
    assert len(meta[storage.MANIFEST_SHA256]) == 64


SAMPLE = 4  # one in SAMPLE refused flips also goes through load_dataset, verify and the writer


def test_every_bit_flip_of_a_manifest_is_refused_or_changes_nothing(
    pristine: Path, datasets_root: Path
) -> None:
    """Exhaustive over one real manifest: open, verify and the resuming writer all refuse it.

    Every flip goes through ``loads_metadata`` (the check every reader runs); ``load_dataset``,
    ``verify_dataset`` and ``DatasetWriter`` run on every flip whose content is unchanged and on
    every ``SAMPLE``-th refused one that parses as JSON (the others fail in the JSON parser, the
    first step of the same function).
    """
    start = time.perf_counter()
    folder = install(pristine, datasets_root)
    file = folder / storage.METADATA_FILE
    original = file.read_bytes()
    want = json.loads(original)
    counts: Counter[str] = Counter()
    for i in range(len(original)):
        for bit in range(8):
            data = bytearray(original)
            data[i] ^= 1 << bit
            counts["flips"] += 1
            try:
                got = storage.loads_metadata(bytes(data), str(file), DATASET)
            except CorruptDatasetError as e:
                counts["refused"] += 1
                assert storage.METADATA_FILE in one_line(e)
                if "not valid JSON" in str(e) or "not UTF-8" in str(e):
                    continue
                counts["refused, valid JSON"] += 1
                if counts["refused, valid JSON"] % SAMPLE:
                    continue
                counts["refused, opened in full"] += 1
                put_manifest(folder, bytes(data))
                with pytest.raises(CorruptDatasetError, match="metadata.json") as info:
                    load_dataset(DATASET)
                one_line(info.value)
                report = storage.verify_dataset(DATASET)
                assert not report.ok and "metadata.json" in report.problems[0]
                with pytest.raises(CorruptDatasetError):
                    storage.DatasetWriter(DATASET).close()
                continue
            assert got == want, (i, bit)
            counts["identical"] += 1
            put_manifest(folder, bytes(data))
            assert load_dataset(DATASET).total_episodes == 3
            assert storage.verify_dataset(DATASET).ok
    put_manifest(folder, original)
    assert storage.verify_dataset(DATASET).ok
    assert counts["flips"] == 8 * len(original)
    assert counts["refused"] + counts["identical"] == counts["flips"]
    assert counts["identical"] < counts["flips"] // 100
    print(f"manifest bit flips ({len(original)} bytes): {dict(counts)}")
    assert time.perf_counter() - start < 60


def test_collect_refuses_to_resume_over_a_flipped_manifest(datasets_root: Path) -> None:
    collect_cartpole("cart/c-v0", 2)
    file = storage.dataset_path("cart/c-v0") / storage.METADATA_FILE
    data = file.read_bytes()
    at = data.index(b'"max_episode_steps": 500') + len(b'"max_episode_steps": 50')
    put_manifest(file.parent, data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :])  # 500 -> 501
    with pytest.raises(CorruptDatasetError, match="does not match its manifest_sha256") as info:
        collect_cartpole("cart/c-v0", 4)
    assert str(file) in one_line(info.value)


def legacy(pristine: Path) -> bytes:
    """The pristine manifest as the previous main wrote it: format 1, no checksum."""
    meta = json.loads((pristine / DATASET / storage.METADATA_FILE).read_bytes())
    del meta[storage.MANIFEST_SHA256]
    meta["format_version"] = 1
    return (json.dumps(meta, indent=1) + "\n").encode()


def test_a_manifest_of_the_previous_format_opens_extends_and_gets_sealed(
    pristine: Path, datasets_root: Path
) -> None:
    folder = install(pristine, datasets_root)
    put_manifest(folder, legacy(pristine))
    assert load_dataset(DATASET).total_episodes == 3
    assert storage.verify_dataset(DATASET).ok
    with storage.DatasetWriter(DATASET) as w:
        w.commit(description="extended")
    meta = json.loads((folder / storage.METADATA_FILE).read_bytes())
    assert meta["format_version"] == storage.FORMAT_VERSION
    assert meta[storage.MANIFEST_SHA256] and meta["description"] == "extended"
    assert load_dataset(DATASET).total_episodes == 3


def test_a_current_manifest_without_its_checksum_is_refused(
    pristine: Path, datasets_root: Path
) -> None:
    folder = install(pristine, datasets_root)
    meta = json.loads((folder / storage.METADATA_FILE).read_bytes())
    del meta[storage.MANIFEST_SHA256]
    put_manifest(folder, json.dumps(meta).encode())
    with pytest.raises(CorruptDatasetError, match="no manifest_sha256") as info:
        load_dataset(DATASET)
    assert "metadata.json" in one_line(info.value)


def test_an_edited_manifest_names_the_file_and_the_fix(pristine: Path, datasets_root: Path) -> None:
    folder = install(pristine, datasets_root)
    meta = json.loads((folder / storage.METADATA_FILE).read_bytes())
    meta["observation_space"]["high"][0] = 9.0
    put_manifest(folder, json.dumps(meta).encode())
    with pytest.raises(CorruptDatasetError) as info:
        load_dataset(DATASET)
    text = one_line(info.value)
    assert str(folder / storage.METADATA_FILE) in text and "restore" in text
    assert curate(["verify", DATASET]) == 1


# ------------------------------------------------------------------------------------------
# items 6 and 18: hostile manifests (sealed again, as an attacker would) are one error line


def change(edit: Callable[[dict[str, Any]], Any]) -> Callable[[bytes], bytes]:
    """A case that edits the parsed manifest and seals it again."""

    def apply(data: bytes) -> bytes:
        meta = json.loads(data)
        edit(meta)
        return storage.seal_metadata(meta).encode()

    return apply


def raw(text: str) -> Callable[[bytes], bytes]:
    return lambda _: text.encode()


def shard(meta: dict[str, Any]) -> dict[str, Any]:
    return meta["shards"][0]


def obs(meta: dict[str, Any]) -> dict[str, Any]:
    return meta["observation_space"]


def deep(data: bytes) -> bytes:
    text = data.decode()
    return text.replace(
        '"provenance": {', '"provenance": {"x": ' + "[" * 5000 + "]" * 5000 + ",", 1
    ).encode()


def split_shard(meta: dict[str, Any], second: dict[str, Any]) -> None:
    meta["shards"].append({**shard(meta), **second})


HOSTILE: dict[str, Callable[[bytes], bytes]] = {
    "5000-deep nesting": deep,
    "70-deep nesting, sealed": change(
        lambda m: m["provenance"].update(x=json.loads("[" * 70 + "]" * 70))
    ),
    "empty object": raw("{}"),
    "a list": raw("[1, 2]"),
    "null": raw("null"),
    "not JSON": raw('{"format_version": 2,'),
    "not UTF-8": lambda _: b'{"a": "\xff"}',
    "huge integer": raw('{"format_version": 1' + "0" * 5000 + "}"),
    "shards: 5": change(lambda m: m.update(shards=5)),
    "shards: [5]": change(lambda m: m.update(shards=[5])),
    "shards: [{}]": change(lambda m: m.update(shards=[{}])),
    "total_episodes: many": change(lambda m: m.update(total_episodes="many")),
    "total_episodes: true": change(lambda m: m.update(total_episodes=True)),
    "total_episodes: -1": change(lambda m: m.update(total_episodes=-1)),
    "total_episodes off by one": change(lambda m: m.update(total_episodes=4)),
    "total_steps off": change(lambda m: m.update(total_steps=1)),
    "no observation_space": change(lambda m: m.pop("observation_space")),
    "no action_space": change(lambda m: m.pop("action_space")),
    "no shards": change(lambda m: m.pop("shards")),
    "no fingerprint": change(lambda m: m.pop("fingerprint")),
    "no format_version": change(lambda m: m.pop("format_version")),
    "format_version: '2'": change(lambda m: m.update(format_version="2")),
    "format_version: 0": change(lambda m: m.update(format_version=0)),
    "format_version: 99": change(lambda m: m.update(format_version=99)),
    "dataset_id: 5": change(lambda m: m.update(dataset_id=5)),
    "fingerprint: 5": change(lambda m: m.update(fingerprint=5)),
    "Box shape [1e5, 1e5, 1e5]": change(lambda m: obs(m).update(shape=[10**5] * 3, low=0, high=1)),
    "Box shape [-1]": change(lambda m: obs(m).update(shape=[-1])),
    "Box shape [4.0]": change(lambda m: obs(m).update(shape=[4.0])),
    "Box shape: 4": change(lambda m: obs(m).update(shape=4)),
    "Box 100 dims": change(lambda m: obs(m).update(shape=[1] * 100, low=0, high=1)),
    "Box dtype object": change(lambda m: obs(m).update(dtype="object")),
    "Box dtype V1e9": change(lambda m: obs(m).update(dtype="V1000000000")),
    "Box dtype subarray": change(lambda m: obs(m).update(dtype="(100000,100000)f8")),
    "Box low wrong shape": change(lambda m: obs(m).update(low=[1, 2])),
    "Box low text": change(lambda m: obs(m).update(low="abc")),
    "Box low > high": change(lambda m: obs(m).update(low=5, high=-5)),
    "Box low dict": change(lambda m: obs(m).update(low={"a": 1})),
    "space type Graph": change(lambda m: obs(m).update(type="Graph")),
    "space: 5": change(lambda m: m.update(observation_space=5)),
    "Discrete n 0": change(lambda m: m["action_space"].update(n=0)),
    "Discrete n '2'": change(lambda m: m["action_space"].update(n="2")),
    "Discrete n 2**70": change(lambda m: m["action_space"].update(n=2**70)),
    "Discrete dtype float": change(lambda m: m["action_space"].update(dtype="float32")),
    "MultiDiscrete ragged": change(
        lambda m: m.update(action_space={"type": "MultiDiscrete", "nvec": [[2, 2], [2]]})
    ),
    "MultiDiscrete nvec 0": change(
        lambda m: m.update(action_space={"type": "MultiDiscrete", "nvec": [0]})
    ),
    "MultiBinary [1e6, 1e6]": change(
        lambda m: m.update(action_space={"type": "MultiBinary", "n": [10**6, 10**6]})
    ),
    "Text max_length 1e12": change(
        lambda m: m.update(
            action_space={"type": "Text", "max_length": 10**12, "min_length": 1, "charset": "ab"}
        )
    ),
    "Dict subspaces 5": change(
        lambda m: m.update(observation_space={"type": "Dict", "subspaces": 5})
    ),
    "Tuple subspaces {}": change(
        lambda m: m.update(observation_space={"type": "Tuple", "subspaces": {"a": 1}})
    ),
    "Dict of 20,000 leaves": change(
        lambda m: m.update(
            observation_space={
                "type": "Dict",
                "subspaces": {f"k{i}": {"type": "Discrete", "n": 2} for i in range(20_000)},
            }
        )
    ),
    "shard file ../x.h5": change(lambda m: shard(m).update(file="../x.h5")),
    "shard bytes -1": change(lambda m: shard(m).update(bytes=-1)),
    "shard bytes true": change(lambda m: shard(m).update(bytes=True)),
    "shard sha256 short": change(lambda m: shard(m).update(sha256="abc")),
    "shard id_offset '1'": change(lambda m: shard(m).update(id_offset="1")),
    "shard id_offset 1e300": change(lambda m: shard(m).update(id_offset=1e300)),
    "shard id_offset 2**70": change(lambda m: shard(m).update(id_offset=2**70)),
    "shard id_map [[0]]": change(lambda m: shard(m).update(id_map=[[0]])),
    "shard id_map 5": change(lambda m: shard(m).update(id_map=5)),
    "shard id_ranges 5": change(lambda m: shard(m).update(id_ranges=5)),
    "shard id_ranges reversed": change(lambda m: shard(m).update(id_ranges=[[3, 0]])),
    "shard episodes 'x'": change(lambda m: shard(m).update(episodes="x")),
    "shard obs_rows off": change(lambda m: shard(m).update(obs_rows=5)),
    "shard info_schema 5": change(lambda m: shard(m).update(info_schema=5)),
    "shard info dtype V1e11": change(
        lambda m: shard(m).update(info_schema={"x": {"dtype": "V99999999999", "shape": []}})
    ),
    "shard info shape [1e9, 1e9]": change(
        lambda m: shard(m).update(info_schema={"x": {"dtype": "<f8", "shape": [10**9, 10**9]}})
    ),
    "one shard named twice": change(lambda m: m["shards"].append(dict(shard(m)))),
    "two shards, overlapping ids": change(
        lambda m: split_shard(m, {"file": "shard-000001-00000000.h5", "id_offset": 2})
    ),
    "env_spec: 5": change(lambda m: m.update(env_spec=5)),
    "env_spec without id": change(lambda m: m["env_spec"].pop("id")),
    "env_spec unknown key": change(lambda m: m["env_spec"].update(bogus=1)),
    "record_infos: 'yes'": change(lambda m: m.update(record_infos="yes")),
    "provenance: 5": change(lambda m: m.update(provenance=5)),
    "lineage: 5": change(lambda m: m.update(lineage=5)),
    "requirements: 5": change(lambda m: m.update(requirements=5)),
    "ref_min_score: 'x'": change(lambda m: m.update(ref_min_score="x")),
    "dataset_bytes: 'x'": change(lambda m: m.update(dataset_bytes="x")),
    "next_shard_seq: -1": change(lambda m: m.update(next_shard_seq=-1)),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_manifest_is_one_error_line_everywhere(
    case: str,
    pristine: Path,
    datasets_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    good = install(pristine, datasets_root, "good/b-v0")
    put_manifest(
        good,
        change(lambda m: m.update(dataset_id="good/b-v0"))(
            good.joinpath(storage.METADATA_FILE).read_bytes()
        ),
    )
    folder = install(pristine, datasets_root)
    put_manifest(folder, HOSTILE[case]((folder / storage.METADATA_FILE).read_bytes()))

    with pytest.raises(HarvestError) as info:
        load_dataset(DATASET)
    assert isinstance(info.value, CorruptDatasetError | FormatVersionError)
    one_line(info.value)
    try:
        report = storage.verify_dataset(DATASET)
    except FormatVersionError as e:
        one_line(e)
    else:
        assert not report.ok
        assert all("\n" not in p for p in report.problems)
    with pytest.raises(HarvestError):
        storage.DatasetWriter(DATASET)

    # listings skip it with one warning and still show the good one
    with pytest.warns(Warning) as caught:
        listed = list_local_datasets()
    assert list(listed) == ["good/b-v0"]
    assert any(DATASET in str(w.message) for w in caught)
    remote = tmp_path / "remote"
    shutil.copytree(datasets_root, remote, ignore=shutil.ignore_patterns(".locks", ".tmp"))
    with pytest.warns(Warning):
        assert list(open_remote(f"file://{remote}").list()) == ["good/b-v0"]
    # a pull refuses it with one line and leaves nothing (item 18: a shard named twice)
    elsewhere = tmp_path / "elsewhere"
    with pytest.raises(HarvestError) as info:
        pull_dataset(DATASET, f"file://{remote}", root=elsewhere)
    one_line(info.value)
    assert not (elsewhere / DATASET).exists()

    # the command line: one line on stderr, exit 1, never a traceback
    capsys.readouterr()
    for argv in (["show", DATASET], ["verify", DATASET]):
        assert curate(argv) == 1
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
    for argv in (["list"], ["list", f"file://{remote}"]):
        assert curate(argv) == 0
        out, err = capsys.readouterr()
        assert "good/b-v0" in out and "Traceback" not in out + err
        assert err.startswith("curate: warning: skipping") and err.count("\n") == 1, err


def test_a_metadata_json_over_the_size_cap_is_refused_unread(
    pristine: Path, datasets_root: Path
) -> None:
    folder = install(pristine, datasets_root)
    file = folder / storage.METADATA_FILE
    file.unlink()
    with open(file, "wb") as f:  # sparse: costs no disk
        f.truncate(storage.METADATA_MAX_BYTES + 1)
    with pytest.raises(CorruptDatasetError, match="larger than") as info:
        load_dataset(DATASET)
    one_line(info.value)


def test_a_space_over_the_step_limit_is_refused_before_collecting() -> None:
    import gymnasium as gym

    from collector.errors import UsageError

    huge = gym.spaces.MultiBinary([2**15, 2**14])  # 537 MB a step; gymnasium allocates none
    with pytest.raises(UsageError, match="a step, more than"):
        storage.new_metadata(huge, gym.spaces.Discrete(2), None, record_infos=False)


# ------------------------------------------------------------------------------------------
# any sealed edit of a real manifest: it opens and reads, or it is one HarvestError line

ODD_VALUES = [None, True, 0, -1, 2**70, 1.5, float("inf"), "", "x", "Infinity", [], {}, [1]]
ODD_VALUES += [[[0, 3]], [[0, 3, 0]], "shard-000000-00000000.h5", "float32", "|S3", [0], "Box"]
ODD_VALUES += ["Dict", "Text", "MultiBinary", {"type": "Discrete", "n": 2}, {"a": {"b": []}}]


def json_paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict | list):
        for key, child in node.items() if isinstance(node, dict) else enumerate(node):
            found += json_paths(child, (*prefix, key))
    return found


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_any_sealed_edit_of_a_manifest_reads_or_is_one_error_line(
    data: st.DataObject, pristine: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = tmp_path_factory.mktemp("edited")
    folder = install(pristine, root)
    meta = json.loads((folder / storage.METADATA_FILE).read_bytes())
    paths = json_paths(meta)
    for _ in range(data.draw(st.integers(1, 3))):
        *parents, last = data.draw(st.sampled_from(paths))
        node = meta
        with contextlib.suppress(KeyError, IndexError, TypeError):
            for key in parents:
                node = node[key]
            if isinstance(node, dict) and data.draw(st.booleans()):
                node.pop(last, None)
            else:
                # a copy: an edit may land inside a value put by an earlier one (a list
                # put into itself was a circular reference, and edits leaked into ODD_VALUES)
                node[last] = copy.deepcopy(data.draw(st.sampled_from(ODD_VALUES)))
    try:
        put_manifest(folder, storage.seal_metadata(meta).encode())
    except ValueError:  # infinity: the writer refuses it, so build what an attacker would
        put_manifest(folder, json.dumps({**meta, storage.MANIFEST_SHA256: ""}).encode())
    try:
        ds = load_dataset(DATASET, root=root)
        for _ in ds.iterate_episodes():
            pass
        assert ds.env_spec is None or ds.env_spec.id
        storage.verify_dataset(DATASET, root)
    except HarvestError as e:
        one_line(e)
