"""Reference scores (issue 20 item 4): `collector.scores`, `collect score=true`, `curate score`.

Real CartPole datasets collected with the heuristic policy (returns 500), scored by rolling the
random policy and the dataset's own policy out again on seeds none of its episodes used.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from helpers import read_episodes

from collector import DataCollector, storage
from collector.collect import collect
from collector.errors import DatasetNotFoundError, HarvestWarning, InvalidValueError, UsageError
from collector.scores import dataset_seeds, score_dataset, score_seeds
from curation import load_dataset
from curation.cli import main

HEURISTIC = {"_target_": "collector.policies.CartPoleHeuristic", "gain": 1.0}


def heuristic(dataset_id: str = "cart/heuristic-v0", episodes: int = 3, **kw: Any) -> str:
    cfg = {"env": "CartPole-v1", "episodes": episodes, "dataset_id": dataset_id}
    collect({**cfg, "policy": HEURISTIC, "progress": False, **kw})
    return dataset_id


def stored(dataset_id: str) -> dict[str, Any]:
    return storage.read_metadata(storage.dataset_path(dataset_id), dataset_id)


def test_scores_a_heuristic_dataset_so_its_normalized_score_is_one() -> None:
    dataset_id = heuristic()
    before = stored(dataset_id)
    scores = score_dataset(dataset_id, episodes=5)
    assert scores.ref_max_score == 500.0
    assert 5 < scores.ref_min_score < 60  # a random CartPole policy lasts ~20 steps
    ds = load_dataset(dataset_id)
    returns = np.array([float(ep.rewards.sum()) for ep in ds.iterate_episodes()])
    assert np.allclose(ds.get_normalized_score(returns), 1.0)
    assert ds.get_normalized_score(scores.ref_min_score) == 0.0
    meta = stored(dataset_id)
    how = meta["ref_scores"]
    assert (meta["ref_min_score"], meta["ref_max_score"]) == (scores.ref_min_score, 500.0)
    assert (how["env_id"], how["episodes"], how["num_envs"]) == ("CartPole-v1", 5, 1)
    assert how["max_policy"] == HEURISTIC
    assert how["min_policy"] == {"_target_": "collector.policies.RandomPolicy"}
    assert how["seed_entropy"] == 0 and how["fingerprint"] == meta["fingerprint"]
    # seeds recorded, and none of them is one the dataset's own episodes were reset with
    assert len(set(how["seeds"])) == 5
    own = {ep["seed"] for ep in read_episodes(dataset_id)}
    assert own == dataset_seeds(storage.dataset_path(dataset_id), meta) and len(own) == 3
    assert not own & set(how["seeds"])
    # a new commit of the same data
    assert meta["fingerprint"] == before["fingerprint"] and meta["updated"] > before["updated"]
    assert storage.verify_dataset(dataset_id).ok


def test_rescoring_is_reproducible_and_batched_rollouts_agree() -> None:
    dataset_id = heuristic()
    first = score_dataset(dataset_id, episodes=4)
    again = score_dataset(dataset_id, episodes=4)
    batched = score_dataset(dataset_id, episodes=4, num_envs=3)  # act_batch, waves of 3
    assert (first.ref_min_score, first.ref_max_score) == (again.ref_min_score, 500.0)
    assert first.how["seeds"] == again.how["seeds"] == batched.how["seeds"]
    assert (batched.ref_min_score, batched.ref_max_score) == (first.ref_min_score, 500.0)
    assert batched.how["num_envs"] == 3


def test_score_seeds_skip_the_datasets_own() -> None:
    seeds, policy_seeds = score_seeds(7, 3)
    skipped, _ = score_seeds(7, 3, used={seeds[1]})
    assert skipped[:1] == seeds[:1] and skipped[1] == seeds[2] and seeds[1] not in skipped
    assert len(set(seeds) | set(policy_seeds)) == 6


def test_collect_score_true_stores_the_scores_curate_score_gives() -> None:
    dataset_id = heuristic(score=True, score_episodes=4)
    meta = stored(dataset_id)
    assert meta["ref_max_score"] == 500.0 and meta["ref_min_score"] < 100
    assert meta["ref_scores"]["episodes"] == 4
    assert load_dataset(dataset_id).get_normalized_score(500.0) == 1.0
    # a re-run that collects nothing does not roll out again
    heuristic(score=True, score_episodes=4)
    assert stored(dataset_id)["ref_scores"]["computed"] == meta["ref_scores"]["computed"]
    later = score_dataset(dataset_id, episodes=4)
    assert (later.ref_min_score, later.ref_max_score) == (
        meta["ref_min_score"],
        meta["ref_max_score"],
    )
    assert later.how["seeds"] == meta["ref_scores"]["seeds"]


def test_the_run_summary_tells_the_reference_scores_it_stored() -> None:
    from collector.cli import summary

    result = collect(
        {
            "env": "CartPole-v1",
            "policy": {"_target_": "collector.policies.CartPoleHeuristic"},
            "episodes": 2,
            "dataset_id": "cart/summary-v0",
            "score": True,
            "score_episodes": 2,
        }
    )
    assert result.ref_scores is not None and result.ref_scores[1] == 500.0
    assert f"reference scores {result.ref_scores[0]:g} (random) to 500 (this policy)" in (
        summary(result)
    )
    plain = collect({"env": "CartPole-v1", "episodes": 2, "dataset_id": "cart/plain-v0"})
    assert plain.ref_scores is None and "reference scores" not in summary(plain)


def test_score_is_off_by_default_and_not_data_affecting() -> None:
    dataset_id = heuristic()
    assert "ref_min_score" not in stored(dataset_id)
    heuristic(score=True, score_episodes=2, episodes=3)  # resumes: score is not data-affecting
    assert stored(dataset_id)["ref_scores"]["episodes"] == 2
    with pytest.raises(UsageError, match=re.escape("score_episodes=0 must be a positive")):
        heuristic(score=True, score_episodes=0)


def own_loop_dataset(dataset_id: str) -> str:
    env = DataCollector(gym.make("CartPole-v1"))
    for seed in range(2):
        env.reset(seed=seed)
        done = False
        while not done:
            _, _, term, trunc, _ = env.step(env.action_space.sample())
            done = term or trunc
    env.create_dataset(dataset_id)
    env.close()
    return dataset_id


def test_a_dataset_with_no_policy_is_one_clear_line_unless_scores_are_given() -> None:
    dataset_id = own_loop_dataset("own/loop-v0")
    with pytest.raises(UsageError, match=r"has no policy to rebuild .* --min X --max Y") as e:
        score_dataset(dataset_id)
    assert "\n" not in str(e.value)
    # the random policy's rollouts still give the min when only the max is given
    scores = score_dataset(dataset_id, episodes=3, ref_max_score=500.0)
    assert scores.ref_max_score == 500.0 and 5 < scores.ref_min_score < 60
    assert scores.how["given"] == {"ref_max_score": 500.0}
    given = score_dataset(dataset_id, ref_min_score=10, ref_max_score=200)
    assert (given.ref_min_score, given.ref_max_score, given.how) == (10, 200, {"method": "given"})
    assert load_dataset(dataset_id).get_normalized_score(105.0) == 0.5
    with pytest.raises(InvalidValueError, match="are equal, so normalized scores would divide"):
        score_dataset(dataset_id, ref_min_score=1, ref_max_score=1)


def test_a_policy_that_runs_other_code_needs_the_opt_in() -> None:
    dataset_id = heuristic("cart/left-v0", policy={"_target_": "helpers.always_left"})
    with pytest.raises(UsageError, match=r"'helpers.always_left'.*--trust-remote-code"):
        score_dataset(dataset_id, episodes=2)
    assert "ref_min_score" not in stored(dataset_id)
    # always pushing left ends sooner than random: stored as measured, max below min
    scores = score_dataset(dataset_id, episodes=2, trust_remote_code=True)
    assert scores.ref_max_score < scores.ref_min_score


def test_an_env_not_registered_here_is_refused_before_any_rollout() -> None:
    gym.register("ScoreTestCart-v0", entry_point="gymnasium.envs.classic_control:CartPoleEnv")
    try:
        dataset_id = heuristic("cart/unregistered-v0", env="ScoreTestCart-v0")
    finally:
        del gym.registry["ScoreTestCart-v0"]
    with pytest.raises(UsageError, match=r"'ScoreTestCart-v0' is not registered in Gymnasium"):
        score_dataset(dataset_id)


def test_bad_arguments_and_missing_datasets() -> None:
    dataset_id = heuristic()
    with pytest.raises(InvalidValueError, match="episodes=0 must be between 1 and 10000"):
        score_dataset(dataset_id, episodes=0)
    with pytest.raises(InvalidValueError, match="num_envs=0"):
        score_dataset(dataset_id, num_envs=0)
    with pytest.raises(DatasetNotFoundError):
        score_dataset("no/such-v0")


def test_random_policy_dataset_scores_are_refused_as_equal() -> None:
    dataset_id = heuristic("cart/random-v0", policy={"_target_": "collector.policies.RandomPolicy"})
    with pytest.raises(InvalidValueError, match="would divide by zero"):
        score_dataset(dataset_id, episodes=2)


# -- curate score -----------------------------------------------------------------------------


def test_curate_score_prints_one_line_and_exit_codes(
    capsys: pytest.CaptureFixture[str], datasets_root: Path
) -> None:
    dataset_id = heuristic()
    assert main(["score", dataset_id, "--episodes", "3"]) == 0
    out, _ = capsys.readouterr()
    assert re.fullmatch(
        rf"{dataset_id}: ref_min_score [\d.]+ \(random policy\), ref_max_score 500 \(its "
        r"policy\), 3 episodes each\n",
        out,
    )
    own = own_loop_dataset("own/loop-v0")
    assert main(["score", own]) == 2
    _, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("curate: error: dataset 'own/loop-v0' has no")
    assert main(["score", own, "--min", "0", "--max", "500"]) == 0
    assert "ref_min_score 0 (given), ref_max_score 500 (given)" in capsys.readouterr()[0]
    assert main(["score", "no/such-v0", "--root", str(datasets_root)]) == 1
    assert main(["score", dataset_id, "--episodes", "0"]) == 2
    assert capsys.readouterr()[1].count("\n") == 2  # the not-found line and this one


def test_a_dataset_naming_arbitrary_code_as_its_policy_runs_none_of_it(tmp_path: Path) -> None:
    dataset_id = heuristic()
    marker = tmp_path / "ran"
    hostile = {"_target_": "subprocess.Popen", "args": ["touch", str(marker)]}
    for policy, entropy, message in [
        (hostile, 0, "its policy names 'subprocess.Popen'"),
        ({"_target_": "collector.policy_mixture.MixturePolicy", "policies": [hostile]}, 0,
         "its policy names 'subprocess.Popen'"),
        ("collector.policies.CartPoleHeuristic", 0, "has no policy to rebuild"),
        (HEURISTIC, -1, "has no policy to rebuild"),
    ]:  # fmt: skip
        with storage.DatasetWriter(dataset_id) as writer:
            assert writer.meta is not None
            prov = {**writer.meta["provenance"], "seed_entropy": entropy}
            writer.commit(provenance={**prov, "data_config": {"policy": policy}})
        with pytest.raises(UsageError, match=re.escape(message)):
            score_dataset(dataset_id, episodes=2)
    assert not marker.exists()


class FailingPolicy:
    def reset(self, seed: int | None) -> None:
        self.t = 0

    def act(self, obs: Any) -> int:
        self.t += 1
        if self.t > 3:
            raise ValueError("model\nexploded")
        return 0


def test_a_policy_failing_mid_rollout_is_one_line() -> None:
    from collector.errors import CollectionError
    from collector.scores import reference_scores

    with pytest.raises(CollectionError, match="on the env failed: the dataset.s policy.s rollouts "
                       "raised ValueError: "
                       "model exploded$"):  # fmt: skip
        reference_scores(lambda: gym.make("CartPole-v1"), FailingPolicy(), episodes=2)


def test_ref_scores_must_be_an_object_in_a_manifest() -> None:
    from collector.errors import CorruptDatasetError

    dataset_id = heuristic()
    with storage.DatasetWriter(dataset_id) as writer:
        with pytest.raises(CorruptDatasetError, match="ref_scores must be an object or null"):
            writer.commit(ref_scores=[1, 2])


def test_data_collector_expert_policy_scores_use_the_same_rollouts() -> None:
    from collector.policies import CartPoleHeuristic

    env = DataCollector(gym.make("CartPole-v1"))
    env.reset(seed=0)
    env.step(0)
    env.step(0)  # an unfinished episode is left out; nothing else needed
    env.create_dataset(
        "own/expert-v0", expert_policy=CartPoleHeuristic().act, num_episodes_average_score=3
    )
    env.close()
    meta = stored("own/expert-v0")
    assert meta["ref_max_score"] == 500.0 and 5 < meta["ref_min_score"] < 60


def test_score_keys_compose_from_the_command_line() -> None:
    from hydra import compose, initialize_config_module

    from collector.config import CollectConfig

    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(
            "collect",
            overrides=["score=true", "score_episodes=3", "episodes=2", "policy=cartpole_heuristic"],
        )
        random = compose("collect", overrides=["score=true", "score_episodes=2", "episodes=2"])
        with pytest.raises(Exception, match="score"):
            compose("collect", overrides=["score=maybe"])
    config = CollectConfig.from_dict(cfg)
    assert (config.score, config.score_episodes) == (True, 3)
    assert (CollectConfig().score, CollectConfig().score_episodes) == (False, 10)
    result = collect(cfg, policy_name="cartpole_heuristic")
    assert stored(result.dataset_id)["ref_scores"]["episodes"] == 3
    # a random policy's run: its scores would be equal; the data is kept, unscored, and said so
    with pytest.warns(HarvestWarning, match="cartpole-v1/random-v0: not scored: .* are equal"):
        result = collect(random, policy_name="random")
    assert result.total_episodes == 2 and "ref_min_score" not in stored(result.dataset_id)
