"""A tiny diffusion policy on the toy task's shapes (state [2], action [1]), saved to disk."""

from toys import tiny_diffusion

from robot_rl.policies import save_policy


def tiny_diffusion_base(tmp_path, action_dim: int = 1):
    policy = tiny_diffusion(2, action_dim, 4, 2, state_max=2.0, inference_steps=3)
    return policy, save_policy(policy, tmp_path / "base")
