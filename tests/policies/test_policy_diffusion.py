"""DiffusionPolicy: shapes, determinism given the noise, noise checks, fast paths, config checks."""

import copy
import dataclasses

import numpy as np
import pytest
import torch
from policy_factories import ACTION_DIM, HORIZON, build, diffusion_config, make_batch

from robot_rl.policies.diffusion import SMALL_BATCH, DiffusionPolicyConfig
from robot_rl.threads import FEW_THREADS_BATCH


@pytest.mark.parametrize("images", [False, True], ids=["state", "state+image"])
def test_predict_chunk_shapes_and_range(images: bool) -> None:
    policy = build(diffusion_config(images=images))
    obs = make_batch(policy.config, 3, np.random.default_rng(0))["obs"]
    chunk = policy.predict_chunk(obs)
    assert chunk.shape == (3, HORIZON, ACTION_DIM) and chunk.dtype == np.float32
    assert np.all(np.abs(chunk) <= 1.0) and np.all(np.isfinite(chunk))
    assert policy.act(obs).shape == (3, policy.n_action_steps, ACTION_DIM)
    assert policy.noise_shape == (HORIZON, ACTION_DIM)


def test_same_noise_same_chunk_different_noise_different_chunk() -> None:
    policy = build(diffusion_config(images=True))
    obs = make_batch(policy.config, 2, np.random.default_rng(0))["obs"]
    rng = np.random.default_rng(1)
    noise = rng.standard_normal((2, HORIZON, ACTION_DIM)).astype(np.float32)
    first = policy.predict_chunk(obs, noise)
    for _ in range(3):  # also after the traced denoiser has been re-optimised by the JIT
        np.testing.assert_array_equal(policy.predict_chunk(obs, noise), first)
    other = policy.predict_chunk(obs, rng.standard_normal(noise.shape).astype(np.float32))
    assert np.abs(other - first).max() > 1e-3


def test_own_generator_is_seedable() -> None:
    policy = build(diffusion_config())
    obs = make_batch(policy.config, 2, np.random.default_rng(0))["obs"]
    policy.seed(7)
    a = policy.predict_chunk(obs)
    b = policy.predict_chunk(obs)
    policy.seed(7)
    np.testing.assert_array_equal(policy.predict_chunk(obs), a)
    assert np.abs(a - b).max() > 1e-3  # fresh noise on every call


def test_bad_noise_raises_naming_the_shape() -> None:
    policy = build(diffusion_config())
    obs = make_batch(policy.config, 2, np.random.default_rng(0))["obs"]
    with pytest.raises(ValueError, match=r"\(2, 3, 8\).*\(2, 8, 3\)"):
        policy.predict_chunk(obs, np.zeros((2, ACTION_DIM, HORIZON), np.float32))
    nan = np.zeros((2, HORIZON, ACTION_DIM), np.float32)
    nan[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        policy.predict_chunk(obs, nan)
    obs_t = {"state": torch.from_numpy(obs["state"])}
    with pytest.raises(ValueError, match=r"\(1, 8, 3\).*\(2, 8, 3\)"):
        policy.sample_actions(obs_t, torch.zeros(1, HORIZON, ACTION_DIM))
    with pytest.raises(ValueError, match="NaN"):
        policy.sample_actions(obs_t, torch.from_numpy(nan))


def test_bad_observations_raise_naming_the_key() -> None:
    policy = build(diffusion_config())
    with pytest.raises(KeyError, match="lacks 'state'"):
        policy.predict_chunk({"image.front": np.zeros((1, 2, 16, 16, 3), np.uint8)})
    with pytest.raises(ValueError, match=r"'state' has shape \(1, 3, 5\).*\[B, 2, 5\]"):
        policy.predict_chunk({"state": np.zeros((1, 3, 5), np.float32)})


def test_sample_actions_matches_predict_chunk_and_keeps_autograd_usable() -> None:
    policy = build(diffusion_config())
    obs = make_batch(policy.config, 2, np.random.default_rng(0))["obs"]
    noise = np.random.default_rng(1).standard_normal((2, HORIZON, ACTION_DIM)).astype(np.float32)
    chunk = policy.sample_actions(
        {"state": torch.from_numpy(obs["state"])}, torch.from_numpy(noise)
    )
    np.testing.assert_array_equal(chunk.numpy(), policy.predict_chunk(obs, noise))
    critic = torch.nn.Linear(ACTION_DIM, 1)
    critic(chunk).sum().backward()  # no "inference tensor" error: sampled under no_grad
    assert critic.weight.grad is not None


@pytest.mark.parametrize("batch", [1, SMALL_BATCH + 2])
def test_traced_sampler_is_bit_identical_to_eager(batch: int) -> None:
    traced = build(diffusion_config())
    eager = build(dataclasses.replace(traced.config, trace_sampler=False))
    obs = make_batch(traced.config, batch, np.random.default_rng(0))["obs"]
    noise = (
        np.random.default_rng(2).standard_normal((batch, HORIZON, ACTION_DIM)).astype(np.float32)
    )
    for _ in range(3):
        np.testing.assert_array_equal(
            traced.predict_chunk(obs, noise), eager.predict_chunk(obs, noise)
        )
    # The trace shares the weights: an optimiser-style update reaches it.
    with torch.no_grad():
        for a, b in zip(traced.parameters(), eager.parameters(), strict=True):
            a.add_(0.01)
            b.add_(0.01)
    np.testing.assert_array_equal(traced.predict_chunk(obs, noise), eager.predict_chunk(obs, noise))


@pytest.mark.parametrize("batch", [32, FEW_THREADS_BATCH + 1])
def test_best_of_n_sized_batches_sample_on_one_thread(batch: int, monkeypatch) -> None:
    policy = build(dataclasses.replace(diffusion_config(), trace_sampler=False))
    seen = []
    denoise = policy.unet.denoise

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return denoise(*args, **kwargs)

    monkeypatch.setattr(policy.unet, "denoise", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        policy.predict_chunk(make_batch(policy.config, batch, np.random.default_rng(0))["obs"])
    finally:
        torch.set_num_threads(before)
    expected = 1 if batch <= FEW_THREADS_BATCH else 2
    assert seen and set(seen) == {expected}


def test_sampling_restores_the_thread_count() -> None:
    policy = build(diffusion_config())
    before = torch.get_num_threads()
    policy.predict_chunk(make_batch(policy.config, 1, np.random.default_rng(0))["obs"])
    assert torch.get_num_threads() == before


def test_fast_ddim_tables_match_the_stock_scheduler() -> None:
    policy = build(diffusion_config())
    assert isinstance(policy.sample_scheduler.alphas_cumprod, list)  # the fast path is active
    assert policy._timesteps == list(range(90, -1, -10))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"horizon": 6, "n_action_steps": 4, "down_dims": (16, 32, 64)}, "divisible by 4"),
        ({"num_inference_steps": 200}, "num_inference_steps=200 > num_train_timesteps=100"),
        ({"n_action_steps": 9}, "n_action_steps=9 > horizon=8"),
        ({"down_dims": (12, 32)}, "multiple of 8"),
        ({"kernel_size": 4}, "odd"),
        ({"obs_shapes": {"image.front": (16, 16)}}, r"cameras are \(H, W, 3\)"),
        ({"dtype": "float16"}, "dtype='float16'"),
        ({"state_norm": "minmax"}, "state_norm='minmax'"),
    ],
)
def test_config_checks(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        diffusion_config(**overrides)


def test_config_turns_lists_into_tuples() -> None:
    config = diffusion_config(down_dims=[16, 32], obs_shapes={"state": [5]})
    assert config.down_dims == (16, 32) and config.obs_shapes == {"state": (5,)}
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.horizon = 4  # type: ignore[misc]


def test_default_config_builds_and_samples() -> None:
    """The shipped defaults (a one-level UNet, H=16, Ta=8, 10 DDIM steps) on a state task."""
    config = DiffusionPolicyConfig(obs_shapes={"state": (5,)}, action_dim=ACTION_DIM)
    policy = build(config)
    obs = make_batch(config, 2, np.random.default_rng(0))["obs"]
    assert policy.predict_chunk(obs).shape == (2, 16, ACTION_DIM)
    assert policy.act(obs).shape == (2, 8, ACTION_DIM)
    assert len(policy._timesteps) == 10


def test_deepcopy_after_sampling_keeps_outputs() -> None:
    policy = build(diffusion_config())
    obs = make_batch(policy.config, 1, np.random.default_rng(0))["obs"]
    noise = np.zeros((1, HORIZON, ACTION_DIM), np.float32)
    chunk = policy.predict_chunk(obs, noise)  # traces the denoiser
    np.testing.assert_array_equal(copy.deepcopy(policy).predict_chunk(obs, noise), chunk)
