"""Foundation suite: physics and policy-loop speed, chunk latency, and the default demo's base
policy success (>= 100 episodes, 95% Wilson interval), pretrain and demo wall time."""

from __future__ import annotations

import gc
import tempfile
import time

import numpy as np
import torch

from robot_rl import config
from robot_rl.core.envs import make_vector_env, step_info
from robot_rl.core.task import TaskConfig, make_env
from robot_rl.eval.rollout import make_policy_env
from robot_rl.eval.stats import percentile
from robot_rl.jobs.demo import demo
from robot_rl.policies.checkpoint import load_policy


def run(overrides: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="robot_rl_bench_") as tmp:
        job = config.load_job("demo", config.DemoJob, [f"out={tmp}/demo", *overrides])
        report = demo(job)
        policy = load_policy(f"{tmp}/demo/policy")
    task = job.task.build()
    latency = chunk_latency_ms(policy, task)
    return {
        "task": task.name,
        "raw_env_steps_per_s": raw_env_steps_per_s(task),
        "policy_loop_env_steps_per_s": policy_loop_env_steps_per_s(policy, task, n_envs=16),
        "chunk_latency_ms_p50": percentile(latency, 50),
        "chunk_latency_ms_p99": percentile(latency, 99),
        "base_success": report["eval"]["success_rate"],
        "base_success_ci95": report["eval"]["success_ci95"],
        "base_episodes": report["eval"]["episodes"],
        "expert_demo_success": report["demos"]["expert_success"],
        "pretrain_wall_s": report["pretrain"]["wall_s"],
        "demo_wall_s": report["demo_wall_s"],
        "torch_threads": torch.get_num_threads(),
    }


def raw_env_steps_per_s(task: TaskConfig, steps: int = 20_000, seed: int = 0) -> float:
    """Steps/s of the bare task (physics and observation), random actions, one core."""
    env = make_env(task).unwrapped
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, size=(steps, *env.action_space.shape)).astype(np.float32)
    env.reset(seed=seed)
    start = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    rate = steps / (time.perf_counter() - start)
    env.close()
    return rate


def policy_loop_env_steps_per_s(
    policy, task: TaskConfig, n_envs: int = 16, chunks: int = 60
) -> float:
    """Env steps/s of the full acting loop: ``n_envs`` vectorised environments, one batched
    inference per chunk, wrappers included."""
    env = make_vector_env([lambda: make_policy_env(task, policy)] * n_envs)
    obs, _ = env.reset(seed=0)
    policy.act(obs)  # warm-up
    steps, start = 0, time.perf_counter()
    for _ in range(chunks):
        obs, _, _, _, info = env.step(policy.act(obs))
        steps += int(step_info(info, "chunk_steps").sum())
    rate = steps / (time.perf_counter() - start)
    env.close()
    return rate


def chunk_latency_ms(policy, task: TaskConfig, calls: int = 1000) -> list[float]:
    """Wall time of one ``predict_chunk`` at batch 1 on real observations. Garbage from the
    earlier stages is collected first so that the figure is the policy's, not the demo's."""
    gc.collect()
    env = make_policy_env(task, policy)
    obs, _ = env.reset(seed=0)
    batch = {k: v[None] for k, v in obs.items()}
    for _ in range(50):
        policy.predict_chunk(batch)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        policy.predict_chunk(batch)
        times.append(1000 * (time.perf_counter() - start))
    env.close()
    return times
