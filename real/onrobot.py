"""Latent-noise steering (DSRL) with the daemon as the environment.

The daemon acts (the steered policy's noise actor picks each chunk's latent noise, the base
denoises it, the safety layer filters it) and records every episode; between episodes the
learner reads the new episode from the store, turns it into chunk transitions, trains, saves
the steered policy and pushes it to the daemon over the control API::

    learner                          daemon (control API)                 store
    save_steered(actor) ---------->  POST /policy (between episodes)
                         ---------->  POST /episode/start  -> ticks ---->  append episode
    refresh, read episode <----------------------------------------------  (published)
    chunk transitions -> replay -> SAC updates -> next push

A chunk transition is built from the recorded steps that share a ``chunk_id``: the state
history at its first step, its ``latent_noise`` (the noise the base denoised), the discounted
reward of its steps and the state history where the next chunk starts. Run the daemon with
synchronous chunks (``prefetch=-1``, ``wait_for_chunk_s > 0``) so every chunk is executed
from its first action, exactly the chunk MDP that DSRL learns in.

It follows :func:`robot_rl.improvers.online.train_dsrl` step for step, so that a robot learns
as much per environment step as the simulator does: ``cfg.warmup_env_steps`` of the base's own
behaviour before any update; the networks' input normalisation fitted on those states before
the first update; ``utd_ratio`` updates per chunk transition; and the policy pushed for
training is the *stochastic* noise actor (SAC explores with it), while the checkpoint left at
the end acts with the actor's mean (``cfg.deterministic``) like every evaluated one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from real.client import DaemonClient
from robot_rl.core import keys
from robot_rl.data import EpisodeStore
from robot_rl.improvers.dsrl import DSRL, DSRLConfig
from robot_rl.improvers.steered import save_steered
from robot_rl.policies.checkpoint import load_policy
from robot_rl.rl.replay import ReplayBuffer


def chunk_transitions(
    episode: dict[str, np.ndarray],
    n_obs_steps: int,
    n_action_steps: int,
    gamma: float,
    bootstrap_timeouts: bool = False,
) -> dict[str, np.ndarray]:
    """Chunk transitions of one recorded episode (steps with ``chunk_id < 0``, a human or the
    hold in control, are left out). Returns ``state, noise, chunk, reward, next_state,
    discount`` with states as flat histories ``[N, To * D]``. The last chunk's discount is 0
    when the episode terminated, and also when it ran out its steps (not aborted) unless
    ``bootstrap_timeouts``; an aborted episode (safety stop, driver loss) bootstraps."""
    ids, states = episode["chunk_id"], episode[keys.STATE]
    starts = [t for t in range(len(ids)) if ids[t] >= 0 and (t == 0 or ids[t] != ids[t - 1])]
    out: dict[str, list] = {
        k: [] for k in ("state", "noise", "chunk", "reward", "next_state", "discount")
    }
    terminated = bool(episode[keys.TERMINATED][-1]) if len(ids) else False
    aborted = bool(episode["aborted"][-1]) if len(ids) and "aborted" in episode else False
    ends_return = terminated or not (bootstrap_timeouts or aborted)
    for n, t in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(ids)
        steps = end - t
        rewards = episode[keys.REWARD][t:end].astype(np.float64)
        chunk = episode[keys.ACTION][t:end]
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], n_action_steps - steps, 0)])
        last = n + 1 == len(starts)
        out["state"].append(_history(states, t, n_obs_steps))
        out["noise"].append(episode["latent_noise"][t])
        out["chunk"].append(chunk[:n_action_steps].ravel())
        out["reward"].append(float(np.sum(rewards * gamma ** np.arange(steps))))
        out["next_state"].append(_history(states, min(end, len(ids) - 1), n_obs_steps))
        out["discount"].append(gamma**steps * (0.0 if last and ends_return else 1.0))
    return {k: np.asarray(v, np.float32) for k, v in out.items()}


def _history(states: np.ndarray, t: int, n: int) -> np.ndarray:
    """States ``t-n+1 .. t`` (the first repeated before the start), flattened."""
    index = np.clip(np.arange(t - n + 1, t + 1), 0, None)
    return states[index].reshape(-1)


@dataclass
class OnRobotResult:
    episodes: int = 0
    env_steps: int = 0
    successes: list[bool] = field(default_factory=list)
    episode_steps: list[int] = field(default_factory=list)
    updates: int = 0
    transitions: int = 0
    pushes: int = 0
    wall_s: float = 0.0


def improve_on_robot(
    client: DaemonClient,
    store_path: str | Path,
    base_path: str | Path,
    cfg: DSRLConfig,
    env_steps: int | None,
    out: str | Path,
    warmup_env_steps: int | None = None,
    seed: int = 0,
    max_episodes: int | None = None,
    progress: bool = False,
) -> tuple[DSRL, OnRobotResult]:
    """Train through the daemon until ``env_steps`` control steps are recorded (default
    ``cfg.env_steps``) or ``max_episodes`` episodes ran; returns the learner and a log. The
    daemon must serve the base policy's robot; its store is read after every episode. The
    first ``warmup_env_steps`` (default ``cfg.warmup_env_steps``) act with the base."""
    from tqdm.auto import tqdm

    if cfg.clock:
        raise ValueError(
            "improver.clock=true is not available through the daemon: its stored episodes and "
            "the served steered policy carry no episode clock; train on the robot with clock=false"
        )
    env_steps = cfg.env_steps if env_steps is None else env_steps
    warmup = cfg.warmup_env_steps if warmup_env_steps is None else warmup_env_steps
    base = load_policy(base_path)
    state_dim = int(base.config.obs_shapes[keys.STATE][-1])
    learner = DSRL(base, base.n_obs_steps * state_dim, cfg)
    replay = ReplayBuffer(
        learner.obs_dim, learner.noise_dim + learner.chunk_dim, cfg.replay_capacity
    )
    policy_dir = Path(out) / "policy"
    result, start = OnRobotResult(), time.perf_counter()
    client.load_policy(str(base_path))  # warm-up: the base policy's own noise, N(0, I)
    bar = tqdm(total=env_steps, desc="dsrl on robot", unit="step", disable=not progress)
    i = 0
    while result.env_steps < env_steps and (max_episodes is None or i < max_episodes):
        if result.updates:  # the stochastic actor explores (SAC); pushed after every update
            _push(learner, policy_dir, base_path, client, deterministic=False)
            result.pushes += 1
        summary = client.run_episode(seed=seed + i)
        i += 1
        result.successes.append(bool(summary["success"]))
        result.episode_steps.append(int(summary["steps"]))
        result.env_steps += int(summary["steps"])
        bar.update(int(summary["steps"]))
        bar.set_postfix(success20=f"{np.mean(result.successes[-20:]):.2f}")
        with EpisodeStore.open(store_path) as store:
            episode = store.get_episode(summary["index"])
        batch = chunk_transitions(
            episode, base.n_obs_steps, learner.n_action_steps, cfg.gamma, cfg.bootstrap_timeouts
        )
        if not len(batch["state"]):
            continue
        noise = np.clip(batch["noise"] / cfg.noise_bound, -0.999, 0.999)
        replay.add(
            batch["state"],
            np.concatenate([noise, batch["chunk"]], axis=1),
            batch["reward"],
            batch["next_state"],
            batch["discount"],
        )
        result.transitions += len(batch["state"])
        if result.env_steps >= warmup and len(replay) >= cfg.sac.batch_size:
            if result.updates == 0:  # as train_dsrl: statistics of the warm-up's states
                learner.fit_obs_normalization(replay.obs[: len(replay)])
            for _ in range(cfg.sac.utd_ratio * len(batch["state"])):
                learner.update(replay.sample(cfg.sac.batch_size, learner.generator))
                result.updates += 1
    bar.close()
    result.episodes, result.wall_s = i, time.perf_counter() - start
    _push(learner, policy_dir, base_path, None, deterministic=cfg.deterministic)
    return learner, result


def _push(learner: DSRL, folder: Path, base_path, client: DaemonClient | None, deterministic):
    """Save the steered policy (stochastic or mean actor) and load it into the daemon."""
    learner.policy.deterministic = deterministic
    try:
        save_steered(learner.policy, folder, base_path)
    finally:
        learner.policy.deterministic = learner.cfg.deterministic
    if client is not None:
        client.load_policy(str(folder))
