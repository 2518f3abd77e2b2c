"""LeRobot's DiffusionPolicy behind our steerable chunk-policy interface (lerobot 0.4.4)."""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from policy_factories import (
    ACTION_DIM,
    HORIZON,
    IMAGE_SHAPE,
    N_OBS,
    STATE_DIM,
    make_batch,
    make_config,
)
from policy_factories import make_stats as _make_stats
from safetensors.torch import load_file

pytest.importorskip("lerobot", reason="lerobot is not installed (scripts/setup.sh installs it)")

from robot_rl import config as job_config  # noqa: E402
from robot_rl.jobs.collect import collect  # noqa: E402
from robot_rl.jobs.evaluate import eval_job  # noqa: E402
from robot_rl.jobs.pretrain import pretrain_job  # noqa: E402
from robot_rl.policies import (  # noqa: E402
    LeRobotDiffusionPolicy,
    LeRobotDiffusionPolicyConfig,
    Normalizer,
    load_policy,
    save_policy,
)
from robot_rl.policies import lerobot_diffusion as module  # noqa: E402
from robot_rl.train import pretrain  # noqa: E402

GOLDEN = Path(__file__).parent / "golden" / "lerobot_diffusion_layout.json"
UPDATE_GOLDEN = os.environ.get("ROBOT_RL_UPDATE_GOLDEN") == "1"


def tiny_config(images: bool = False, **overrides) -> LeRobotDiffusionPolicyConfig:  # noqa: ANN003
    sizes = dict(
        down_dims=(8, 16),
        diffusion_step_embed_dim=8,
        num_inference_steps=5,
        spatial_softmax_num_keypoints=4,
    )
    return make_config(LeRobotDiffusionPolicyConfig, images, **{**sizes, **overrides})


def build(config: LeRobotDiffusionPolicyConfig) -> LeRobotDiffusionPolicy:
    return LeRobotDiffusionPolicy(
        config, Normalizer.from_stats(_make_stats(config), config.norm_modes)
    )


@pytest.fixture(scope="module")
def policy() -> LeRobotDiffusionPolicy:
    return build(tiny_config()).eval()


def _obs(config, batch: int = 3, seed: int = 0) -> dict:  # noqa: ANN001
    return make_batch(config, batch, np.random.default_rng(seed))["obs"]


def _noise(batch: int = 3, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, HORIZON, ACTION_DIM)).astype(np.float32)


# ---- the steerable chunk-policy contract ---------------------------------------------------


@pytest.mark.parametrize("images", [False, True], ids=["state", "state+image"])
def test_chunk_shapes_and_range(images: bool) -> None:
    config = tiny_config(images=images)
    policy = build(config).eval()
    assert policy.noise_shape == (HORIZON, ACTION_DIM)
    assert (policy.horizon, policy.n_action_steps, policy.n_obs_steps) == (HORIZON, 4, N_OBS)
    chunk = policy.predict_chunk(_obs(config), _noise())
    assert chunk.shape == (3, HORIZON, ACTION_DIM) and chunk.dtype == np.float32
    assert np.all(np.isfinite(chunk)) and np.abs(chunk).max() <= 1.0
    np.testing.assert_array_equal(policy.act(_obs(config), _noise()), chunk[:, :4])


def test_same_noise_same_chunk_different_noise_different_chunk(policy) -> None:  # noqa: ANN001
    obs = _obs(policy.config)
    torch.manual_seed(123)
    first = policy.predict_chunk(obs, _noise(seed=1))
    torch.manual_seed(456)  # the global RNG plays no part: DDIM with eta=0 draws nothing
    np.testing.assert_array_equal(policy.predict_chunk(obs, _noise(seed=1)), first)
    other = policy.predict_chunk(obs, _noise(seed=2))
    assert np.abs(other - first).max() > 1e-3


def test_noise_reaches_lerobots_sampler_unchanged(policy) -> None:  # noqa: ANN001
    """The chunk is LeRobot's own DDIM denoising of exactly the noise we pass."""
    obs_t = {k: torch.from_numpy(v) for k, v in _obs(policy.config).items()}
    noise = torch.from_numpy(_noise())
    diffusion = policy.model.diffusion
    assert type(diffusion.noise_scheduler).__name__ == "DDIMScheduler"
    with torch.no_grad():
        cond = diffusion._prepare_global_conditioning(policy.lerobot_observation(obs_t))
        expected = diffusion.conditional_sample(3, global_cond=cond, noise=noise)
    expected = policy.normalizer.unnormalize({"action": expected})["action"].clamp(-1, 1)
    np.testing.assert_allclose(policy.predict_chunk(_obs(policy.config), _noise()), expected)


def test_own_generator_is_seedable(policy) -> None:  # noqa: ANN001
    obs = _obs(policy.config)
    policy.seed(7)
    first = policy.predict_chunk(obs)
    policy.seed(7)
    np.testing.assert_array_equal(policy.predict_chunk(obs), first)
    assert np.abs(policy.predict_chunk(obs) - first).max() > 1e-3  # the generator moved on


def test_sample_actions_matches_predict_chunk(policy) -> None:  # noqa: ANN001
    obs = _obs(policy.config)
    torch_chunk = policy.sample_actions(obs, torch.from_numpy(_noise()))
    assert not torch_chunk.is_inference()
    np.testing.assert_array_equal(torch_chunk.numpy(), policy.predict_chunk(obs, _noise()))


def test_bad_noise_raises_naming_the_shape(policy) -> None:  # noqa: ANN001
    obs = _obs(policy.config)
    with pytest.raises(ValueError, match=r"noise has shape \(3, 4, 3\).*\(3, 8, 3\)"):
        policy.predict_chunk(obs, np.zeros((3, 4, 3), np.float32))
    with pytest.raises(ValueError, match=r"noise has shape \(2, 8, 3\)"):
        policy.predict_chunk(obs, _noise(batch=2))
    nan = _noise()
    nan[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        policy.predict_chunk(obs, nan)
    with pytest.raises(ValueError, match="noise has shape"):
        policy.sample_actions(obs, torch.zeros(3, HORIZON, ACTION_DIM + 1))
    with pytest.raises(ValueError, match="NaN or inf"):
        policy.sample_actions(obs, torch.from_numpy(nan))


def test_bad_observations_raise_naming_the_key(policy) -> None:  # noqa: ANN001
    with pytest.raises(KeyError, match="lacks 'state'"):
        policy.predict_chunk({"other": np.zeros((1, N_OBS, STATE_DIM), np.float32)})
    with pytest.raises(ValueError, match=r"observation 'state' has shape \(1, 3, 5\)"):
        policy.predict_chunk({"state": np.zeros((1, 3, STATE_DIM), np.float32)})


# ---- LeRobot's view of the batch -----------------------------------------------------------


def test_state_split_and_image_layout_follow_lerobots_keys() -> None:
    config = tiny_config(images=True, robot_state_dim=2)
    policy = build(config)
    obs = {k: torch.from_numpy(v) for k, v in _obs(config, batch=2).items()}
    batch = policy.lerobot_observation(obs)
    assert batch["observation.state"].shape == (2, N_OBS, 2)
    assert batch["observation.environment_state"].shape == (2, N_OBS, STATE_DIM - 2)
    h, w, c = IMAGE_SHAPE
    image = batch["observation.images.front"]
    assert image.shape == (2, N_OBS, c, h, w) and 0.0 <= image.min() and image.max() <= 1.0
    lerobot = policy.model.config
    assert lerobot.noise_scheduler_type == "DDIM" and lerobot.pretrained_backbone_weights is None
    # state only: the whole vector is robot state, the environment state an empty stand-in
    plain = build(tiny_config()).model.config
    assert plain.robot_state_feature.shape == (STATE_DIM,)
    assert plain.env_state_feature.shape == (0,)


# ---- training ------------------------------------------------------------------------------


def _fixed_batch(config):  # noqa: ANN001, ANN202
    batch = make_batch(config, 16, np.random.default_rng(0))
    return lambda batch_size, rng: batch


def _loss(policy, batch) -> float:  # noqa: ANN001
    with torch.no_grad():
        return policy.compute_loss(batch, generator=torch.Generator().manual_seed(0)).item()


def test_loss_is_reproducible_given_the_generator_and_spares_the_global_rng(policy) -> None:  # noqa: ANN001
    batch = _fixed_batch(policy.config)(16, None)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    first = _loss(policy, batch)
    assert torch.equal(torch.get_rng_state(), state)
    assert _loss(policy, batch) == first
    with torch.no_grad():
        other = policy.compute_loss(batch, generator=torch.Generator().manual_seed(1)).item()
    assert other != first


def test_a_few_pretrain_steps_lower_the_loss() -> None:
    config = tiny_config(down_dims=(16, 32))
    policy = build(config)
    sample = _fixed_batch(config)
    before = _loss(policy, sample(16, None))
    history = pretrain(
        policy, sample, steps=40, batch_size=16, lr=1e-2, ema=False, warmup_steps=1,
        progress=False, seed=0,
    )  # fmt: skip
    after = _loss(policy, sample(16, None))
    assert after < 0.7 * before, (before, after)
    assert len(history["losses"]) == 40 and not policy.training


def test_loss_masks_padded_actions_when_asked() -> None:
    batch = make_batch(tiny_config(), 4, np.random.default_rng(0))
    all_padding = {**batch, "action_is_pad": np.ones_like(batch["action_is_pad"])}
    masked = build(tiny_config(mask_padded_actions=True))
    assert masked.model.config.do_mask_loss_for_padding
    assert _loss(masked, all_padding) == 0.0 < _loss(masked, batch)
    assert _loss(build(tiny_config()), all_padding) > 0.0  # LeRobot's default keeps them


# ---- checkpoints ---------------------------------------------------------------------------


@pytest.mark.parametrize("images", [False, True], ids=["state", "state+image"])
def test_save_load_round_trip_gives_identical_chunks(tmp_path: Path, images: bool) -> None:
    config = tiny_config(images=images, robot_state_dim=3)
    policy = build(config)
    with torch.no_grad():  # move off the seeded init so that loading really has to load
        for p in policy.parameters():
            p.add_(0.01 * torch.randn_like(p))
    policy.eval()
    save_policy(policy, tmp_path / "ckpt")
    loaded = load_policy(tmp_path / "ckpt")
    assert type(loaded) is LeRobotDiffusionPolicy and loaded.config == policy.config
    obs = _obs(config)
    np.testing.assert_array_equal(
        loaded.predict_chunk(obs, _noise()), policy.predict_chunk(obs, _noise())
    )


def test_golden_checkpoint_layout(tmp_path: Path) -> None:
    """A change here means old LeRobot-diffusion checkpoints may no longer load (a lerobot
    upgrade renamed or reshaped the model's tensors, or our config changed). If intended,
    regenerate with ROBOT_RL_UPDATE_GOLDEN=1 pytest tests/policies/test_lerobot_diffusion.py."""
    folder = save_policy(build(tiny_config()), tmp_path / "ckpt")
    header = json.loads((folder / "config.json").read_text())
    layout = {
        "files": sorted(p.name for p in folder.iterdir()),
        "config.json": header,
        "model.safetensors": {
            k: "x".join(map(str, v.shape))
            for k, v in load_file(folder / "model.safetensors").items()
        },
        "normalizer.safetensors": sorted(load_file(folder / "normalizer.safetensors")),
    }
    if UPDATE_GOLDEN:
        GOLDEN.write_text(json.dumps(layout, indent=1, sort_keys=True) + "\n")
    assert layout == json.loads(GOLDEN.read_text()), test_golden_checkpoint_layout.__doc__


# ---- configuration and bad input -----------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(horizon=6), "divisible by 4"),
        (dict(down_dims=(8, 12)), "multiple of n_groups=8"),
        (dict(down_dims=()), "at least one level"),
        (dict(robot_state_dim=STATE_DIM + 1), r"robot_state_dim=6 must lie in \[1, 5\]"),
        (dict(num_inference_steps=200), "num_inference_steps=200 > num_train_timesteps=100"),
        (dict(beta_schedule="cosine"), "beta_schedule='cosine'"),
        (dict(obs_shapes={"state": (5,), "joints": (2,)}), r"vector keys \['joints', 'state'\]"),
        (dict(obs_shapes={"state": (5,), "image.front": (8, 8, 3)}, crop_shape=(9, 8)), "exceeds"),
    ],
)
def test_config_checks(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


def test_missing_lerobot_names_the_install_command(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setitem(sys.modules, "lerobot.policies.diffusion.modeling_diffusion", None)
    with pytest.raises(ImportError, match=r"pip install --no-deps lerobot==0\.4\.4"):
        module.import_lerobot_diffusion()


# ---- the jobs ------------------------------------------------------------------------------


def test_pretrain_and_eval_jobs_run_it_from_the_policy_group(tmp_path: Path) -> None:
    store = tmp_path / "demos.zarr"
    collect(
        job_config.load_job("collect", job_config.CollectJob, ["episodes=2", f"store={store}"]),
        progress=False,
    )
    overrides = ["policy=lerobot_diffusion", f"store={store}", f"out={tmp_path / 'policy'}"]
    job = job_config.load_job(
        "pretrain",
        job_config.PretrainJob,
        [*overrides, "steps=3", "batch_size=8", "progress=false"],
    )
    assert job.policy["policy_class"] == "LeRobotDiffusionPolicy"
    trained = pretrain_job(job)
    assert np.isfinite(trained["final_loss"])
    policy = load_policy(trained["checkpoint"])
    assert isinstance(policy, LeRobotDiffusionPolicy) and policy.config.obs_shapes == {
        "state": (10,)
    }
    evaluated = eval_job(
        job_config.load_job(
            "eval",
            job_config.EvalJob,
            [
                f"policy_path={trained['checkpoint']}",
                f"out={tmp_path / 'eval'}",
                "episodes=2",
                "n_envs=2",
                "video_episodes=0",
                "progress=false",
            ],
        )
    )
    assert 0.0 <= evaluated["success_rate"] <= 1.0
