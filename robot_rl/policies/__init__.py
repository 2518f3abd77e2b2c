"""Chunk policies: a steerable diffusion policy, a Gaussian BC baseline, LeRobot's diffusion
policy behind the same interface, their normaliser and checkpoints.

    obs {key: [B, To, ...]} -> policy.predict_chunk(obs[, noise]) -> chunk [B, H, A] in [-1, 1]

Build: ``DiffusionPolicy(DiffusionPolicyConfig(obs_shapes=..., action_dim=...),
Normalizer.from_stats(stats, config.norm_modes))``; save/load with ``save_policy``/``load_policy``.
"""

from robot_rl.policies.bc import GaussianBCPolicy, GaussianBCPolicyConfig
from robot_rl.policies.checkpoint import (
    load_policy,
    policy_class,
    register_policy,
    registered_policies,
    save_policy,
)
from robot_rl.policies.config import PolicyConfig
from robot_rl.policies.diffusion import DiffusionPolicy, DiffusionPolicyConfig
from robot_rl.policies.lerobot_diffusion import (
    LeRobotDiffusionPolicy,
    LeRobotDiffusionPolicyConfig,
)
from robot_rl.policies.normalize import Normalizer

__all__ = [
    "DiffusionPolicy",
    "DiffusionPolicyConfig",
    "GaussianBCPolicy",
    "GaussianBCPolicyConfig",
    "LeRobotDiffusionPolicy",
    "LeRobotDiffusionPolicyConfig",
    "Normalizer",
    "PolicyConfig",
    "load_policy",
    "policy_class",
    "register_policy",
    "registered_policies",
    "save_policy",
]
