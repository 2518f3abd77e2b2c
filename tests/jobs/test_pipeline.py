"""End to end on the default task with tiny settings: collect -> pretrain -> eval -> DSRL."""

import json

import numpy as np
import pytest

from robot_rl import config
from robot_rl.improvers.steered import SteeredPolicy
from robot_rl.jobs.collect import collect
from robot_rl.jobs.evaluate import eval_job
from robot_rl.jobs.improve import improve_job
from robot_rl.jobs.pretrain import pretrain_job
from robot_rl.policies import DiffusionPolicy, load_policy

TINY_DSRL = [
    "improver.env_steps=160",
    "improver.warmup_env_steps=40",
    "improver.n_envs=2",
    "improver.eval_every=160",
    "improver.eval_episodes=2",
    "improver.sac.hidden_dims=[16,16]",
    "improver.sac.batch_size=16",
    "final_eval_episodes=2",
    "progress=false",
]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    store = root / "demos.zarr"
    collect(
        config.load_job("collect", config.CollectJob, ["episodes=4", f"store={store}"]),
        progress=False,
    )
    policies = {}
    for kind in ("diffusion", "bc"):
        job = config.load_job(
            "pretrain",
            config.PretrainJob,
            [
                f"policy={kind}",
                f"store={store}",
                f"out={root / kind}",
                "steps=4",
                "batch_size=8",
                "progress=false",
            ],
        )
        policies[kind] = pretrain_job(job, plot_path=root / f"{kind}_loss.png")
    return root, store, policies


def test_pretrain_writes_a_loadable_checkpoint_and_loss_plot(pipeline):
    root, _, policies = pipeline
    assert (root / "diffusion_loss.png").stat().st_size > 1000
    policy = load_policy(policies["diffusion"]["checkpoint"])
    assert isinstance(policy, DiffusionPolicy)
    assert policy.config.obs_shapes == {"state": (10,)} and policy.action_dim == 2


def test_eval_job_writes_json_png_and_video(pipeline):
    root, _, _ = pipeline
    out = root / "eval"
    job = config.load_job(
        "eval",
        config.EvalJob,
        [
            f"policy_path={root / 'diffusion'}",
            "episodes=3",
            "n_envs=2",
            f"out={out}",
            "video_episodes=1",
            "progress=false",
        ],
    )
    summary = eval_job(job)
    saved = json.loads((out / "eval.json").read_text())
    assert saved["episodes"] == 3 and 0.0 <= saved["success_rate"] <= 1.0
    assert saved["success_ci95"][0] <= saved["success_rate"] <= saved["success_ci95"][1]
    assert (out / "success.png").stat().st_size > 1000
    assert (out / "rollout.mp4").stat().st_size > 1000
    assert summary["mean_length"] > 0


def test_dsrl_improve_job_saves_a_steered_policy_that_reloads(pipeline):
    root, _, _ = pipeline
    out = root / "dsrl"
    job = config.load_job(
        "improve",
        config.ImproveJob,
        [f"base={root / 'diffusion'}", f"out={out}", "video_episodes=1", *TINY_DSRL],
    )
    summary = improve_job(job)
    assert summary["env_steps"] >= 160 and summary["updates"] > 0
    assert (out / "curve.png").is_file() and (out / "summary.json").is_file()
    assert (out / "success.png").stat().st_size > 1000  # base vs steered, with intervals
    assert (out / "rollout.mp4").stat().st_size > 1000
    steered = load_policy(out / "policy")
    assert isinstance(steered, SteeredPolicy) and isinstance(steered.base, DiffusionPolicy)
    obs = {"state": np.zeros((3, 2, 10), np.float32)}
    steered.deterministic = True
    chunk = steered.predict_chunk(obs)
    np.testing.assert_array_equal(chunk, steered.predict_chunk(obs))  # deterministic at the mean
    assert chunk.shape == (3, 16, 2)
    assert np.all(np.abs(steered.base_noise(obs)) <= 1.5 + 1e-6)


def test_dsrl_refuses_an_unsteerable_base_and_a_base_from_another_task(pipeline):
    root, _, _ = pipeline
    job = config.load_job(
        "improve", config.ImproveJob, [f"base={root / 'bc'}", f"out={root / 'x'}", *TINY_DSRL]
    )
    with pytest.raises(TypeError, match="not steerable"):
        improve_job(job)
    job = config.load_job(
        "improve",
        config.ImproveJob,
        ["task=lift", f"base={root / 'diffusion'}", f"out={root / 'y'}", *TINY_DSRL],
    )
    with pytest.raises(ValueError, match="another task"):
        improve_job(job)
    job = config.load_job(
        "improve",
        config.ImproveJob,
        ["improver.noise_bound=0", f"base={root / 'diffusion'}", *TINY_DSRL],
    )
    with pytest.raises(ValueError, match="noise_bound must be > 0"):
        improve_job(job)


def test_a_steered_policy_can_be_steered_again(pipeline):
    root, _, _ = pipeline
    first, second = root / "dsrl_once", root / "dsrl_twice"
    improve_job(
        config.load_job(
            "improve", config.ImproveJob, [f"base={root / 'diffusion'}", f"out={first}", *TINY_DSRL]
        )
    )
    job = config.load_job(
        "improve", config.ImproveJob, [f"base={first / 'policy'}", f"out={second}", *TINY_DSRL]
    )
    summary = improve_job(job)
    twice = load_policy(second / "policy")
    assert isinstance(twice.base, SteeredPolicy) and isinstance(twice.base.base, DiffusionPolicy)
    assert twice.noise_shape == (32,) and summary["updates"] > 0
    assert twice.predict_chunk({"state": np.zeros((2, 2, 10), np.float32)}).shape == (2, 16, 2)
