"""The imagination: a ``gymnasium.vector.VectorEnv`` whose steps are a world model's
predictions, so that any improver that trains on a vector environment trains inside the model.

It behaves like the real task seen through ``make_policy_env`` (observation history, whole
chunks per step, same-step autoreset), so DSRL runs in it unchanged::

    reset: a real state history sampled from the store     obs["state"] [n, To, D]
    step(chunk [n, Ta, A]): Ta model steps per environment, stopping early at
        terminated (the model's termination head), truncated (the horizon, or divergence)
        reward   = sum_i gamma^i (r_i - penalty * disagreement_i)
        r_i      = the success head's 0/1 (reward="sparse", as DSRL's default task reward)
                   or the reward head (reward="model")
        info     = chunk_steps, is_success, disagreement, diverged; final_obs / final_info of
                   ended episodes, whose next episode starts at once (same-step autoreset)

Each step adds Gaussian noise with the model's residual std (``noise_scale`` times it): a
deterministic model predicts the average outcome, a world smoother and kinder than the real
one. With ``success_rule="all"`` a step succeeds only where the heads call every member's
prediction a success: the model claims no success that its members dispute.

``disagreement`` is the members' standard deviation of the predicted next state in the
store's standardised units (root mean over features): where the data is thin the members
disagree, and the penalty keeps the improver from exploiting the model's errors there. A
rollout that leaves the data's range by more than ``divergence_margin`` standard deviations,
or turns non-finite, is truncated at its last sound state and counted in ``diverged``: the
imagination never returns NaN.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv

from robot_rl.core import keys
from robot_rl.core.envs import check_action
from robot_rl.core.policy import ChunkPolicy
from robot_rl.data import EpisodeStore
from world_models.state_model import StateWorldModel, load_state_model
from world_models.train import load_frames

REWARDS = ("sparse", "model")
MEMBERS = ("mean", "random", "episode")
"""which prediction an imagined step follows: the members' mean, a random member per step, or
one member per episode (drawn at its start: each episode a plausible world of its own)"""


@dataclass
class StartStates:
    """Real state histories to start imagined episodes from: ``history [M, To, D]`` and
    whether each is an episode's first frame ``initial [M]``."""

    history: np.ndarray
    initial: np.ndarray

    @classmethod
    def from_store(
        cls, store_path: str | Path, n_obs_steps: int, episodes: np.ndarray | None = None
    ) -> StartStates:
        """Every frame of the store (or of ``episodes``) with its ``n_obs_steps`` history,
        padded at the episode start by repeating the first frame (as ObservationHistory does
        at reset)."""
        if n_obs_steps < 1:
            raise ValueError(f"n_obs_steps must be >= 1, got {n_obs_steps}")
        with EpisodeStore.open(store_path) as store:
            frames = load_frames(store)
        if episodes is not None:
            frames = frames.select(np.asarray(episodes))
        starts = np.repeat(frames.starts, frames.ends - frames.starts)
        index = np.arange(len(frames.state))
        lag = np.arange(n_obs_steps - 1, -1, -1)
        rows = np.maximum(index[:, None] - lag[None, :], starts[:, None])
        return cls(frames.state[rows], index == starts)


class ImaginationEnv(VectorEnv):
    """``num_envs`` imagined episodes in lock-step; see the module docstring."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}
    truncation_is_time_limit = False
    """imagined episodes start mid-episode and are cut at ``horizon`` (or on divergence), not
    at the task's time limit: learners bootstrap through these cuts"""

    def __init__(
        self,
        model: StateWorldModel,
        starts: StartStates,
        num_envs: int,
        n_action_steps: int,
        horizon: int = 24,
        gamma: float = 0.99,
        penalty: float = 1.0,
        reward: str = "sparse",
        initial_fraction: float = 0.5,
        member: str = "mean",
        divergence_margin: float = 3.0,
        success_rule: str = "mean",
        noise_scale: float = 1.0,
        seed: int = 0,
    ):
        if horizon < 1:
            raise ValueError(
                f"imagination horizon must be >= 1 model steps, got {horizon}; a few chunks "
                "(e.g. 24 steps) keep model errors from compounding"
            )
        if num_envs < 1 or n_action_steps < 1:
            raise ValueError(
                f"num_envs and n_action_steps must be >= 1: {num_envs}, {n_action_steps}"
            )
        if reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {reward!r}")
        if success_rule not in ("mean", "all"):
            raise ValueError(f"success_rule must be 'mean' or 'all', got {success_rule!r}")
        if member not in MEMBERS:
            raise ValueError(f"member must be one of {MEMBERS}, got {member!r}")
        if penalty < 0 or not 0.0 <= initial_fraction <= 1.0 or not 0.0 < gamma <= 1.0:
            raise ValueError(
                f"need penalty >= 0, initial_fraction in [0, 1], gamma in (0, 1]; got "
                f"{penalty}, {initial_fraction}, {gamma}"
            )
        d, a = model.cfg.state_dim, model.cfg.action_dim
        if starts.history.ndim != 3 or starts.history.shape[2] != d:
            raise ValueError(
                f"start states have shape {starts.history.shape}, the model reads "
                f"[M, To, {d}] states: were they taken from a store of another task?"
            )
        self.model, self.starts = model.eval(), starts
        self.num_envs, self.n_action_steps, self.horizon = num_envs, n_action_steps, horizon
        self.gamma, self.penalty, self.reward_kind = gamma, penalty, reward
        self.initial_fraction, self.member = initial_fraction, member
        self.success_rule = success_rule
        if noise_scale < 0:
            raise ValueError(f"noise_scale must be >= 0, got {noise_scale}")
        self.noise_scale = noise_scale
        n_obs = starts.history.shape[1]
        self.single_observation_space = spaces.Dict(
            {keys.STATE: spaces.Box(-np.inf, np.inf, (n_obs, d), np.float32)}
        )
        self.observation_space = spaces.Dict(
            {keys.STATE: spaces.Box(-np.inf, np.inf, (num_envs, n_obs, d), np.float32)}
        )
        self.single_action_space = spaces.Box(-1.0, 1.0, (n_action_steps, a), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (num_envs, n_action_steps, a), np.float32)
        margin = divergence_margin * model.state_std
        self._low, self._high = model.state_min - margin, model.state_max + margin
        self._initial_index = np.flatnonzero(starts.initial)
        self._rng = np.random.default_rng(seed)
        self._gen = torch.Generator().manual_seed(seed)
        self._history = np.zeros((num_envs, n_obs, d), np.float32)
        self._elapsed = np.zeros(num_envs, np.int64)
        self._member = np.zeros(num_envs, np.int64)
        self.env_steps = 0
        """model steps taken, over all environments"""
        self.episodes = 0
        """imagined episodes ended"""
        self.successes = 0
        """imagined episodes that the model called successful"""
        self.diverged = 0
        """episodes truncated because the model's prediction left the data's range"""

    # ----------------------------------------------------------------------------- API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
            self._gen = torch.Generator().manual_seed(seed)
        self._restart(np.arange(self.num_envs))
        return self._obs(), {}

    @torch.no_grad()
    def step(self, actions: Any):
        chunk = check_action(actions, self.action_space.shape)
        n = self.num_envs
        total, discount = np.zeros(n), np.ones(n)
        steps = np.zeros(n, np.int64)
        success, terminated = np.zeros(n, bool), np.zeros(n, bool)
        truncated, diverged = np.zeros(n, bool), np.zeros(n, bool)
        disagreement = np.zeros(n)
        active = np.ones(n, bool)
        for k in range(self.n_action_steps):
            if not active.any():
                break
            out = self._model_step(self._history[:, -1], chunk[:, k])
            bad = out["diverged"] & active
            diverged |= bad
            truncated |= bad
            live = active & ~bad  # a diverging step is not taken
            r = out["reward"] - self.penalty * out["disagreement"]
            total[live] += discount[live] * r[live]
            discount[live] *= self.gamma
            steps[live] += 1
            disagreement[live] += out["disagreement"][live]
            success[live] |= out["success"][live]
            terminated[live] |= out["terminated"][live]
            self._history[live] = np.concatenate(
                [self._history[live, 1:], out["next"][live, None]], axis=1
            )
            self._elapsed[live] += 1
            truncated |= live & (self._elapsed >= self.horizon) & ~terminated
            active = live & ~terminated & ~truncated
        self.env_steps += int(steps.sum())
        info = {
            keys.CHUNK_STEPS: steps,
            keys.IS_SUCCESS: success,
            "disagreement": disagreement / np.maximum(steps, 1),
            "diverged": diverged,
        }
        ended = terminated | truncated
        obs = self._obs()
        if ended.any():
            self._end_episodes(ended, success, diverged, obs, info)
            obs = self._obs()
        return obs, total.astype(np.float32), terminated, truncated, info

    # ----------------------------------------------------------------------------- internals
    def _model_step(self, state: np.ndarray, action: np.ndarray) -> dict[str, np.ndarray]:
        s, a = torch.from_numpy(state), torch.from_numpy(action)
        members = self.model.next(s, a)  # [E, n, D]
        if self.member in ("random", "episode"):
            pick = (
                torch.from_numpy(self._member)
                if self.member == "episode"
                else torch.randint(members.shape[0], (s.shape[0],), generator=self._gen)
            )
            nxt = members[pick, torch.arange(s.shape[0])]
        else:
            nxt = members.mean(dim=0)
        spread = (
            (members / self.model.state_std).std(dim=0, unbiased=False)
            if len(members) > 1
            else torch.zeros_like(nxt)
        )
        disagreement = spread.pow(2).mean(dim=-1).sqrt()
        if self.noise_scale > 0:  # the model's aleatoric spread (fit_residual_std)
            noise = torch.randn(nxt.shape, generator=self._gen)
            nxt = nxt + self.noise_scale * self.model.residual_std * noise
        finite = torch.isfinite(nxt).all(dim=-1) & torch.isfinite(disagreement)
        inside = ((nxt >= self._low) & (nxt <= self._high)).all(dim=-1)
        safe = torch.where(finite[:, None], nxt, s)
        if self.success_rule == "all":  # the heads on every member's prediction must agree
            e = members.shape[0]
            sound = torch.where(torch.isfinite(members), members, s.expand_as(members))
            reward, success_logit, terminated_logit = self.model.outcome(
                s.expand(e, *s.shape), a.expand(e, *a.shape), sound
            )
            reward = reward.mean(dim=0)
            success = (success_logit > self.model.success_threshold).all(dim=0)
            terminated = (terminated_logit > self.model.terminated_threshold).all(dim=0)
        else:
            reward, success_logit, terminated_logit = self.model.outcome(s, a, safe)
            success = success_logit > self.model.success_threshold
            terminated = terminated_logit > self.model.terminated_threshold
        step_reward = success.float() if self.reward_kind == "sparse" else reward
        return {
            "next": safe.numpy().astype(np.float32),
            "reward": torch.nan_to_num(step_reward, nan=0.0).numpy().astype(np.float64),
            "success": success.numpy(),
            "terminated": terminated.numpy(),
            "disagreement": torch.nan_to_num(disagreement, nan=0.0).numpy().astype(np.float64),
            "diverged": (~(finite & inside)).numpy(),
        }

    def _end_episodes(self, ended, success, diverged, obs, info) -> None:
        index = np.flatnonzero(ended)
        final_obs = np.empty(self.num_envs, dtype=object)
        for i in index:
            final_obs[i] = {k: v[i].copy() for k, v in obs.items()}
        info[keys.FINAL_OBS], info["_" + keys.FINAL_OBS] = final_obs, ended.copy()
        info[keys.FINAL_INFO] = {
            k: np.copy(v) for k, v in info.items() if not k.startswith(("_", "final"))
        }
        info["_" + keys.FINAL_INFO] = ended.copy()
        self.episodes += len(index)
        self.successes += int(success[index].sum())
        self.diverged += int(diverged[index].sum())
        self._restart(index)

    def _restart(self, index: np.ndarray) -> None:
        n = len(index)
        chosen = self._rng.integers(len(self.starts.history), size=n)
        if len(self._initial_index):
            use = self._rng.random(n) < self.initial_fraction
            pick = self._rng.integers(len(self._initial_index), size=int(use.sum()))
            chosen[use] = self._initial_index[pick]
        self._history[index] = self.starts.history[chosen]
        self._elapsed[index] = 0
        self._member[index] = self._rng.integers(self.model.cfg.ensemble, size=n)

    def _obs(self) -> dict[str, np.ndarray]:
        return {keys.STATE: self._history.copy()}


class ImaginationEnvFactory:
    """``train_env`` for :func:`robot_rl.improvers.online.train_dsrl`: ``factory(n)`` builds an
    :class:`ImaginationEnv` with ``n`` environments for ``policy``'s observation history and
    chunk length. Configs build it by ``_target_`` (``configs/env/imagination.yaml``)."""

    def __init__(
        self,
        task: Any,
        policy: ChunkPolicy,
        world_model: str | Mapping,
        store: str | None = None,
        gamma: float = 0.99,
        **env_kwargs: Any,
    ):
        path = world_model.get("path") if isinstance(world_model, Mapping) else world_model
        if not path:
            raise ValueError(
                "env=imagination needs a trained world model: world_model=state "
                "world_model.path=FOLDER (python -m world_models train ... writes FOLDER)"
            )
        # hydra's instantiate hands a dataclass argument over as a dict
        task_name = task.get("name") if isinstance(task, Mapping) else getattr(task, "name", task)
        self.model, header = load_state_model(path, task=task_name)
        store = store or header.get("extra", {}).get("store")
        if not store or not Path(store).exists():
            raise FileNotFoundError(
                f"world model {path}: its store {store!r} is missing; pass env.store=PATH"
            )
        with EpisodeStore.open(store) as handle:
            if handle.meta.get("task") != self.model.cfg.task:
                raise ValueError(
                    f"start-state store {store} holds task {handle.meta.get('task')!r}, the "
                    f"world model {path} is of {self.model.cfg.task!r}; pass env.store=PATH "
                    "of a store of the model's task"
                )
        check_policy_reads_state(policy, self.model)
        self.policy, self.gamma, self.env_kwargs = policy, gamma, env_kwargs
        ImaginationEnv(
            self.model, _dummy_starts(policy, self.model), 1, policy.n_action_steps, **env_kwargs
        )  # validates settings early
        self.starts = StartStates.from_store(store, policy.n_obs_steps)
        self.built: list[ImaginationEnv] = []

    def __call__(self, num_envs: int) -> ImaginationEnv:
        env = ImaginationEnv(
            self.model,
            self.starts,
            num_envs,
            self.policy.n_action_steps,
            gamma=self.gamma,
            **self.env_kwargs,
        )
        self.built.append(env)
        return env


def check_policy_reads_state(policy: ChunkPolicy, model: StateWorldModel) -> None:
    """A state model can only serve a policy that reads ``state`` alone, of the model's size."""
    shapes = getattr(getattr(policy, "config", None), "obs_shapes", None)
    if shapes is None:
        return
    extra = sorted(set(shapes) - {keys.STATE})
    if extra:
        raise ValueError(
            f"the policy reads {extra}, which a state world model cannot imagine; use a "
            "state-only policy or the image world model"
        )
    if tuple(shapes.get(keys.STATE, ())) != (model.cfg.state_dim,):
        raise ValueError(
            f"the policy reads state {tuple(shapes.get(keys.STATE, ()))}, the world model "
            f"predicts ({model.cfg.state_dim},): trained on another task's store?"
        )


def _dummy_starts(policy: ChunkPolicy, model: StateWorldModel) -> StartStates:
    history = np.zeros((1, policy.n_obs_steps, model.cfg.state_dim), np.float32)
    return StartStates(history, np.ones(1, bool))


def evaluate_in_model(
    policy: ChunkPolicy,
    model: StateWorldModel,
    starts: StartStates,
    episodes: int = 100,
    horizon: int = 50,
    n_envs: int = 16,
    seed: int = 0,
    member: str = "mean",
    success_rule: str = "mean",
    noise_scale: float = 1.0,
) -> dict:
    """What the model believes: ``policy``'s success rate over ``episodes`` imagined episodes
    from the store's initial states, ``horizon`` model steps each (the real task's episode
    length), with no penalty. Each environment runs a fixed quota of episodes, as
    :func:`robot_rl.eval.rollout.evaluate` does."""
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    n_envs = min(n_envs, episodes)
    env = ImaginationEnv(
        model,
        starts,
        n_envs,
        policy.n_action_steps,
        horizon,
        penalty=0.0,
        initial_fraction=1.0,
        member=member,
        success_rule=success_rule,
        noise_scale=noise_scale,
        seed=seed,
    )
    quota = np.full(n_envs, episodes // n_envs)
    quota[: episodes % n_envs] += 1
    done = np.zeros(n_envs, np.int64)
    ep_success = np.zeros(n_envs, bool)
    successes: list[bool] = []
    obs, _ = env.reset(seed=seed)
    policy.reset()
    while (done < quota).any():
        obs, _, terminated, truncated, info = env.step(policy.act(obs))
        ep_success |= info[keys.IS_SUCCESS]
        for i in np.flatnonzero(terminated | truncated):
            if done[i] < quota[i]:
                successes.append(bool(ep_success[i]))
                done[i] += 1
            ep_success[i] = False
    return {
        "success_rate": float(np.mean(successes)),
        "episodes": len(successes),
        "model_steps": env.env_steps,
        "diverged": env.diverged,
    }
