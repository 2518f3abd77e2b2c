"""A tiny diffusion policy on the toy task's shapes (state [2], action [1]), saved to disk."""

import numpy as np

from robot_rl.policies import DiffusionPolicy, DiffusionPolicyConfig, Normalizer, save_policy


def tiny_diffusion_base(tmp_path, action_dim: int = 1):
    config = DiffusionPolicyConfig(
        obs_shapes={"state": (2,)},
        action_dim=action_dim,
        horizon=4,
        n_action_steps=2,
        n_obs_steps=2,
        down_dims=(8,),
        step_embed_dim=8,
        num_train_timesteps=10,
        num_inference_steps=3,
    )
    ones = np.ones(2, np.float32)
    stats = {
        "state": {"min": -ones, "max": 2 * ones, "mean": 0 * ones, "std": ones},
        "action": {"min": -np.ones(action_dim, np.float32), "max": np.ones(action_dim, np.float32)},
    }
    policy = DiffusionPolicy(config, Normalizer.from_stats(stats, config.norm_modes))
    folder = save_policy(policy, tmp_path / "base")
    return policy, folder
