import json

import numpy as np

from robot_rl import cli, config
from robot_rl.data import EpisodeStore


def test_every_job_config_composes_and_validates():
    for job, schema in config.JOB_SCHEMAS.items():
        typed = config.load_job(job, schema)
        assert isinstance(typed, schema)
        if hasattr(typed, "task"):  # serve names a robot, whose config names its task
            assert typed.task.name == "push"  # the default task


def test_interpolations_resolve_from_the_task():
    job = config.load_job("collect", config.CollectJob, ["task=lift"])
    assert job.store == "datasets/lift_demos.zarr"
    assert job.task.env_id == "robot_rl/Lift-v0"


def test_bad_configs_fail_with_the_offending_name(capsys):
    assert cli.main(["collect", "task=nosuch"]) == 2
    err = capsys.readouterr().err
    assert "task/nosuch" in err and "push" in err  # lists what exists
    assert cli.main(["pretrain", "policy=nosuch"]) == 2
    err = capsys.readouterr().err
    assert "policy/nosuch" in err and "diffusion" in err
    assert cli.main(["collect", "episods=3"]) == 2
    assert "episods" in capsys.readouterr().err
    assert cli.main(["collect", "episodes=zero"]) == 2
    assert "episodes" in capsys.readouterr().err
    assert cli.main(["collect", "episodes=0"]) == 2
    assert "episodes must be >= 1" in capsys.readouterr().err


def test_collect_writes_expert_episodes_with_metadata(tmp_path, capsys):
    store_path = tmp_path / "demos.zarr"
    args = ["collect", "episodes=3", f"store={store_path}", "noise_std=0.1", "seed=4"]
    assert cli.main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["episodes_added"] == 3 and summary["n_episodes"] == 3
    store = EpisodeStore.open(store_path)
    assert store.meta["task"] == "push" and store.meta["source"] == "scripted_expert"
    assert store.meta["fps"] == 10
    episode = store.get_episode(0)
    assert episode["state"].shape[1] == 10 and episode["action"].shape[1] == 2
    assert np.all(np.abs(episode["action"]) <= 1.0)
    assert episode["is_success"][-1] == store.episode_success[0]
    store.close()
    # appending to an existing store continues it; a store of another task is refused
    assert cli.main([*args, "seed=10"]) == 0
    capsys.readouterr()
    assert EpisodeStore.open(store_path).n_episodes == 6
    assert cli.main(["collect", "task=lift", "episodes=1", f"store={store_path}"]) == 2
    assert "holds task 'push'" in capsys.readouterr().err
    assert EpisodeStore.open(store_path).n_episodes == 6


def test_collect_policy_rollouts_need_a_policy_and_a_matching_task(tmp_path, capsys):
    store = tmp_path / "mixed.zarr"
    assert cli.main(["collect", "episodes=0", "policy_episodes=2", f"store={store}"]) == 2
    assert "needs policy_path" in capsys.readouterr().err
    missing = tmp_path / "nosuch"
    args = ["collect", "episodes=0", "policy_episodes=1", f"policy_path={missing}"]
    assert cli.main([*args, f"store={store}"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not store.exists()  # nothing was created before the policy loaded


def test_policy_rollouts_are_stored_with_rewards_successes_and_failures(tmp_path, toy_task):
    from toys import ToySteerable

    from robot_rl.jobs.collect import run_policy_episodes

    episodes = list(run_policy_episodes(toy_task, ToySteerable(bias=0.3), 5, n_envs=2, seed=3))
    assert len(episodes) == 5
    for episode, success in episodes:
        n = len(episode["action"])
        assert episode["state"].shape == (n, 2) and episode["reward"].shape == (n,)
        assert success == bool(episode["is_success"].any()) == bool(episode["terminated"][-1])
        assert n <= 12  # the toy's time limit
    outcomes = {success for _, success in episodes}
    assert outcomes == {True, False}  # mixed quality: successes and failures
    again = list(run_policy_episodes(toy_task, ToySteerable(bias=0.3), 5, n_envs=3, seed=3))
    assert [len(e["action"]) for e, _ in again] != [] and len(again) == 5
