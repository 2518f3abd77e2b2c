"""GaussianBCPolicy: shapes, deterministic mean actions, losses, config checks."""

import numpy as np
import pytest
import torch
from policy_factories import ACTION_DIM, HORIZON, bc_config, build, make_batch


@pytest.mark.parametrize("images", [False, True], ids=["state", "state+image"])
def test_predict_chunk_shapes_range_and_determinism(images: bool) -> None:
    policy = build(bc_config(images=images))
    obs = make_batch(policy.config, 3, np.random.default_rng(0))["obs"]
    chunk = policy.predict_chunk(obs)
    assert chunk.shape == (3, HORIZON, ACTION_DIM) and chunk.dtype == np.float32
    assert np.all(np.abs(chunk) <= 1.0)
    np.testing.assert_array_equal(policy.predict_chunk(obs), chunk)  # acts with the mean
    assert policy.act(obs).shape == (3, policy.n_action_steps, ACTION_DIM)


def test_stochastic_policy_samples_around_the_mean() -> None:
    mean_policy = build(bc_config())
    policy = build(bc_config(stochastic=True))
    obs = make_batch(policy.config, 2, np.random.default_rng(0))["obs"]
    policy.seed(3)
    a, b = policy.predict_chunk(obs), policy.predict_chunk(obs)
    policy.seed(3)
    np.testing.assert_array_equal(policy.predict_chunk(obs), a)
    assert np.abs(a - b).max() > 1e-3
    assert np.abs(a - mean_policy.predict_chunk(obs)).max() > 1e-3


def test_forward_returns_bounded_log_std() -> None:
    policy = build(bc_config(min_log_std=-3.0, max_log_std=1.0))
    obs = make_batch(policy.config, 4, np.random.default_rng(0))["obs"]
    mean, log_std = policy({"state": torch.from_numpy(obs["state"])})
    assert mean.shape == log_std.shape == (4, HORIZON, ACTION_DIM)
    assert log_std.min() >= -3.0 and log_std.max() <= 1.0


@pytest.mark.parametrize("loss", ["nll", "mse"])
def test_losses_are_finite_scalars_with_gradients(loss: str) -> None:
    policy = build(bc_config(loss=loss, mask_padded_actions=True))
    value = policy.compute_loss(make_batch(policy.config, 4, np.random.default_rng(0)))
    assert value.ndim == 0 and torch.isfinite(value)
    value.backward()
    assert all(p.grad is not None for p in policy.head.parameters())


def test_batch_with_wrong_action_shape_raises() -> None:
    policy = build(bc_config())
    batch = make_batch(policy.config, 2, np.random.default_rng(0))
    batch["action"] = batch["action"][:, :4]
    with pytest.raises(ValueError, match=r"\(2, 4, 3\), expected \(2, 8, 3\)"):
        policy.compute_loss(batch)
    with pytest.raises(KeyError, match="lacks 'action'"):
        policy.compute_loss({"obs": batch["obs"]})


def test_config_checks() -> None:
    with pytest.raises(ValueError, match="loss='l1'"):
        bc_config(loss="l1")
    with pytest.raises(ValueError, match="min_log_std"):
        bc_config(min_log_std=1.0, max_log_std=0.0)
    with pytest.raises(ValueError, match="hidden_dims is empty"):
        bc_config(hidden_dims=())
