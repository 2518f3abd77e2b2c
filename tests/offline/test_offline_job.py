"""End to end on the default task with tiny settings: expert demos + rollouts of a (barely)
pretrained base -> robot-rl improve improver=chunked_offline -> reloadable policies."""

import json

import pytest

from robot_rl import cli, config
from robot_rl.jobs.collect import collect
from robot_rl.jobs.improve import improve_job
from robot_rl.jobs.pretrain import pretrain_job
from robot_rl.offline.policies import BestOfNPolicy, ExpoPolicy
from robot_rl.policies import DiffusionPolicy, load_policy

TINY = [
    "improver=chunked_offline",
    "improver.critic.hidden_dims=[16,16]",
    "improver.critic.samples=2",
    "improver.critic.batch_size=16",
    "improver.critic.updates=8",
    "improver.eval_every=4",
    "improver.checkpoint_every=4",
    "improver.eval_episodes=1",
    "improver.best_of_n.n=4",
    "improver.expo.updates=4",
    "improver.expo.hidden_dims=[16]",
    "improver.q_weighted.steps=2",
    "improver.q_weighted.batch_size=8",
    "improver.online.env_steps=16",
    "improver.online.n_envs=2",
    "improver.online.eval_every=16",
    "improver.online.utd_ratio=1",
    "final_eval_episodes=1",
    "video_episodes=0",
    "progress=false",
]


@pytest.fixture(scope="module")
def mixed_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("offline")
    store = root / "mixed.zarr"
    collect(config.load_job("collect", config.CollectJob, ["episodes=3", f"store={store}"]), False)
    job = config.load_job(
        "pretrain",
        config.PretrainJob,
        [f"store={store}", f"out={root / 'base'}", "steps=3", "batch_size=8", "progress=false"],
    )
    pretrain_job(job)
    rollouts = config.load_job(
        "collect",
        config.CollectJob,
        ["episodes=0", f"store={store}", f"policy_path={root / 'base'}", "policy_episodes=2"],
    )
    summary = collect(rollouts, progress=False)
    assert summary["policy_episodes_added"] == 2 and summary["n_episodes"] == 5
    return root, store


def test_improve_chunked_offline_writes_policies_pictures_and_resumes(mixed_store):
    root, store = mixed_store
    out = root / "run"
    overrides = [*TINY, f"base={root / 'base'}", f"out={out}", f"improver.store=[{store}]"]
    summary = improve_job(config.load_job("improve", config.ImproveJob, overrides))
    assert set(summary["results"]) == {"base", "best_of_n", "expo", "q_weighted", "online"}
    assert summary["critic_updates"] == 8 and summary["offline_curve"]["updates"] == [4, 8]
    assert summary["online_curve"]["env_steps"][-1] >= 16
    for name in ("curve.png", "success.png", "summary.json", "base_samples.safetensors"):
        assert (out / name).is_file(), name
    assert isinstance(load_policy(out / "best_of_n"), BestOfNPolicy)
    assert isinstance(load_policy(out / "expo"), ExpoPolicy)
    assert isinstance(load_policy(out / "q_weighted"), DiffusionPolicy)
    assert isinstance(load_policy(out / "online"), BestOfNPolicy)
    # a second run resumes: the critic is finished, the cached base samples are reused
    stamp = (out / "base_samples.safetensors").stat().st_mtime_ns
    again = improve_job(config.load_job("improve", config.ImproveJob, overrides))
    assert again["critic_updates"] == 8
    assert (out / "base_samples.safetensors").stat().st_mtime_ns == stamp


def test_eval_job_reads_an_offline_policy_folder(mixed_store, capsys):
    root, _ = mixed_store
    folder = root / "run" / "best_of_n"
    if not folder.is_dir():
        pytest.skip("needs the improve test's run folder")
    args = ["eval", f"policy_path={folder}", "episodes=1", "video_episodes=0", "progress=false"]
    assert cli.main([*args, f"out={root / 'eval'}"]) == 0
    assert "success_rate" in json.loads(capsys.readouterr().out)


def test_bad_store_input_fails_before_training(mixed_store, tmp_path, capsys):
    root, store = mixed_store
    base = [f"base={root / 'base'}", f"out={tmp_path / 'bad'}", *TINY]
    assert cli.main(["improve", *base, f"improver.store=[{tmp_path / 'none.zarr'}]"]) == 2
    assert "no episode store here" in capsys.readouterr().err
    assert cli.main(["improve", *base, "improver.critic.backup=max"]) == 2
    assert "critic.backup='max'" in capsys.readouterr().err
    assert not (tmp_path / "bad" / "critic_checkpoint").exists()
