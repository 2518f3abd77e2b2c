"""Speed of the default policies on this machine: ``python -m robot_rl.policies.benchmark``.

Measures, for a state-only policy with the default config (10 DDIM steps):

- ``predict_chunk`` latency at batch 1 (p50 / p90 / p99 / max over ``--calls`` calls);
- ``sample_actions`` at batch 256 (what DSRL-NA does every update);
- behaviour-cloning steps/s at the default pretraining batch size (256).

The load average is printed with the numbers: on a shared 2-core machine other processes
change them by 2x or more, and with 2 OpenMP threads much more (spinning barriers stall while
another process holds a core); ``OMP_WAIT_POLICY=PASSIVE`` or ``--threads 1`` avoid that.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from robot_rl.policies import (
    DiffusionPolicy,
    DiffusionPolicyConfig,
    GaussianBCPolicy,
    GaussianBCPolicyConfig,
    Normalizer,
)
from robot_rl.train import pretrain


def _stats(state_dim: int, action_dim: int) -> dict[str, dict[str, np.ndarray]]:
    return {
        "state": {"min": -np.ones(state_dim), "max": np.ones(state_dim)},
        "action": {"min": -np.ones(action_dim), "max": np.ones(action_dim)},
    }


def _windows(config: DiffusionPolicyConfig | GaussianBCPolicyConfig):  # noqa: ANN202
    """A WindowSampler-like ``sample(batch_size, rng)`` on random data."""
    d = config.obs_shapes["state"][0]

    def sample(batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        state = rng.uniform(-1, 1, (batch_size, config.n_obs_steps, d)).astype(np.float32)
        action = rng.uniform(-1, 1, (batch_size, config.horizon, config.action_dim))
        pad = np.zeros((batch_size, config.horizon), bool)
        return {"obs": {"state": state}, "action": action.astype(np.float32), "action_is_pad": pad}

    return sample


def latency_ms(policy: DiffusionPolicy, calls: int) -> dict[str, float]:
    """predict_chunk at batch 1: percentiles in milliseconds."""
    rng = np.random.default_rng(0)
    d = policy.config.obs_shapes["state"][0]
    obs = {"state": rng.uniform(-1, 1, (1, policy.n_obs_steps, d)).astype(np.float32)}
    for _ in range(20):  # tracing and the JIT's profiling runs
        policy.predict_chunk(obs)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        policy.predict_chunk(obs)
        times.append((time.perf_counter() - start) * 1e3)
    t = np.asarray(times)
    return {f"p{q}": float(np.percentile(t, q)) for q in (50, 90, 99)} | {"max": float(t.max())}


def batch_sample_ms(policy: DiffusionPolicy, batch: int, repeats: int = 5) -> float:
    """Median wall time of ``sample_actions`` on ``batch`` observations, in milliseconds."""
    d = policy.config.obs_shapes["state"][0]
    obs = {"state": torch.rand(batch, policy.n_obs_steps, d) * 2 - 1}
    noise = torch.randn(batch, *policy.noise_shape)
    policy.sample_actions(obs, noise)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        policy.sample_actions(obs, noise)
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state-dim", type=int, default=20)
    parser.add_argument("--action-dim", type=int, default=7)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--train-steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    stats = _stats(args.state_dim, args.action_dim)

    config = DiffusionPolicyConfig(
        obs_shapes={"state": (args.state_dim,)}, action_dim=args.action_dim
    )
    policy = DiffusionPolicy(config, Normalizer.from_stats(stats, config.norm_modes)).eval()
    print(f"load average before: {os.getloadavg()[0]:.2f}, torch threads {torch.get_num_threads()}")
    print(f"DiffusionPolicy params: {sum(p.numel() for p in policy.parameters()):,}")
    lat = latency_ms(policy, args.calls)
    print(
        "predict_chunk batch 1, 10 DDIM steps (ms): "
        + ", ".join(f"{k} {v:.2f}" for k, v in lat.items())
    )
    print(f"sample_actions batch 256 (ms): {batch_sample_ms(policy, 256):.0f}")
    for cls, cfg_cls in [
        (DiffusionPolicy, DiffusionPolicyConfig),
        (GaussianBCPolicy, GaussianBCPolicyConfig),
    ]:
        cfg = cfg_cls(obs_shapes={"state": (args.state_dim,)}, action_dim=args.action_dim)
        trainee = cls(cfg, Normalizer.from_stats(stats, cfg.norm_modes))
        history = pretrain(trainee, _windows(cfg), steps=args.train_steps, progress=False)
        print(
            f"{cls.__name__} BC at batch 256: {history['steps_per_s']:.1f} steps/s "
            f"({sum(p.numel() for p in trainee.parameters()):,} params)"
        )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
