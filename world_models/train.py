"""Train the state world model from an episode store.

Timeline of one training window (unroll U = 3), each member rolling out its own predictions::

    stored     s_t   s_t+1   s_t+2   s_t+3        actions a_t a_t+1 a_t+2
    member e   s_t -> ŝ_t+1 -> ŝ_t+2 -> ŝ_t+3      loss: sum_k |norm(ŝ_t+k) - norm(s_t+k)|^2
                                                  (steps past the episode's last stored
                                                  observation are masked out)

Then the heads learn the step's reward, ``is_success`` and ``terminated`` from (s_t, a_t,
the trained members' mean one-step prediction), for every stored step including an
episode's last one.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from robot_rl.core import keys
from robot_rl.data import EpisodeStore, StoreError
from world_models.state_model import StateModelConfig, StateWorldModel, save_state_model

REQUIRED_KEYS = (keys.STATE, keys.ACTION, keys.IS_SUCCESS)


@dataclass
class Frames:
    """A store's steps in memory: ``state [N, D]``, ``action [N, A]``, ``reward``,
    ``is_success``, ``terminated`` ``[N]``; ``starts``/``ends`` ``[E]`` the episodes' frame
    ranges (exclusive ends)."""

    state: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    is_success: np.ndarray
    terminated: np.ndarray
    starts: np.ndarray
    ends: np.ndarray

    def select(self, episodes: np.ndarray) -> Frames:
        """The frames of ``episodes`` (indices into ``starts``), re-indexed."""
        index = np.concatenate([np.arange(self.starts[i], self.ends[i]) for i in episodes])
        lengths = (self.ends - self.starts)[episodes]
        ends = np.cumsum(lengths)
        return Frames(
            self.state[index],
            self.action[index],
            self.reward[index],
            self.is_success[index],
            self.terminated[index],
            ends - lengths,
            ends,
        )

    @property
    def episode_of(self) -> np.ndarray:
        """Episode index of every frame ``[N]``."""
        return np.repeat(np.arange(len(self.ends)), self.ends - self.starts)


def check_store(store: EpisodeStore, cfg: StateModelConfig) -> StateModelConfig:
    """The store must hold the keys and shapes the model reads, of the model's task; returns
    the config with ``task``/``state_dim``/``action_dim`` filled in from the store."""
    missing = [k for k in REQUIRED_KEYS if k not in store.keys]
    if missing:
        raise StoreError(
            f"{store.path} has no {missing} (keys: {list(store.keys)}); a state world model "
            "needs per-step 'state', 'action' and 'is_success' (robot-rl collect writes them)"
        )
    if store.n_episodes < 2:
        raise StoreError(f"{store.path} holds {store.n_episodes} episodes; need at least 2")
    task = store.meta.get("task")
    if cfg.task and task != cfg.task:
        raise ValueError(
            f"{store.path} holds task {task!r}, the world model config says {cfg.task!r}; "
            "train on a store of that task or set task="
        )
    state_shape, action_shape = store.schema[keys.STATE].shape, store.schema[keys.ACTION].shape
    if len(state_shape) != 1 or len(action_shape) != 1:
        raise StoreError(
            f"{store.path}: 'state' {state_shape} and 'action' {action_shape} must be vectors"
        )
    for name, have, want in (
        ("state_dim", state_shape[0], cfg.state_dim),
        ("action_dim", action_shape[0], cfg.action_dim),
    ):
        if want and have != want:
            raise ValueError(
                f"{store.path}: {name} is {have}, the world model config says {want}; the "
                "store's observations do not match the model: use a store of the same task "
                f"and observation keys, or set {name}=0 to read it from the store"
            )
    return replace(cfg, task=task, state_dim=state_shape[0], action_dim=action_shape[0])


def load_frames(store: EpisodeStore) -> Frames:
    """Every published step of the store; rejects non-finite states or actions."""
    n = store.n_frames
    state = store.read(keys.STATE).astype(np.float32)
    action = store.read(keys.ACTION).astype(np.float32)
    for name, x in (("state", state), ("action", action)):
        bad = ~np.isfinite(x).all(axis=1)
        if bad.any():
            frame = int(np.argmax(bad))
            episode = int(np.searchsorted(store.episode_ends, frame, side="right"))
            raise StoreError(
                f"{store.path}: {name!r} has NaN/inf at frame {frame} (episode {episode}); "
                "drop that episode (robot-rl dataset check lists them)"
            )
    reward = store.read(keys.REWARD) if keys.REWARD in store.keys else np.zeros(n)
    success = store.read(keys.IS_SUCCESS).astype(bool)
    terminated = store.read(keys.TERMINATED) if keys.TERMINATED in store.keys else success
    ends = store.episode_ends
    return Frames(
        state,
        action,
        reward.astype(np.float32),
        success,
        np.asarray(terminated, dtype=bool),
        ends - store.episode_lengths,
        ends,
    )


def split_episodes(n: int, held_out: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) episode indices; at least one episode on each side when held_out>0."""
    order = np.random.default_rng(seed).permutation(n)
    k = 0 if held_out <= 0 else min(n - 1, max(1, round(held_out * n)))
    return np.sort(order[k:]), np.sort(order[:k])


def train_state_model(
    store_path: str | Path,
    cfg: StateModelConfig,
    out: str | Path | None = None,
    progress: bool = True,
) -> tuple[StateWorldModel, dict]:
    """Train on ``store_path``'s training episodes; with ``out``: the checkpoint folder
    ``out/model``, TensorBoard scalars in ``out/tb`` and ``out/train.json``. Returns the model
    and a summary (losses, wall time, held-out episode indices)."""
    store = EpisodeStore.open(store_path)
    cfg = check_store(store, cfg)
    frames = load_frames(store)
    train_eps, held_eps = split_episodes(store.n_episodes, cfg.held_out, cfg.seed)
    data = frames.select(train_eps)
    torch.manual_seed(cfg.seed)
    model = StateWorldModel(cfg).to(cfg.device)
    tensors = _tensors(data, cfg.device)
    deltas, valid = _one_step_deltas(data)
    model.fit_normalization(tensors["state"], torch.from_numpy(deltas[valid]).to(cfg.device))
    writer = None
    if out is not None:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(Path(out) / "tb"))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps, eta_min=0.1 * cfg.lr)
    pos = float(data.is_success.sum())
    pos_weight = cfg.success_pos_weight or max(1.0, (len(data.is_success) - pos) / max(pos, 1.0))
    gen = torch.Generator().manual_seed(cfg.seed)
    starts = torch.from_numpy(np.flatnonzero(valid))  # steps with a stored next state
    ends = torch.from_numpy(np.repeat(data.ends, data.ends - data.starts))
    start_time = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc=f"world model {cfg.task}", disable=not progress)
    losses: dict[str, float] = {}
    for step in bar:
        losses = _update(model, opt, tensors, starts, ends, gen)
        sched.step()
        if step % 50 == 0 or step == cfg.steps - 1:
            bar.set_postfix(dynamics=f"{losses['dynamics']:.4f}")
            if writer:
                for k, v in losses.items():
                    writer.add_scalar(f"world_model/{k}", v, step)
    losses.update(_fit_heads(model, tensors, cfg, pos_weight, gen, writer, progress))
    if len(held_eps):
        calibrate_thresholds(model, frames.select(held_eps))
    fit_residual_std(model, data)
    wall = time.perf_counter() - start_time
    if writer:
        writer.close()
    model.eval()
    summary = {
        "task": cfg.task,
        "store": str(Path(store_path)),
        "train_episodes": len(train_eps),
        "held_out_episodes": held_eps.tolist(),
        "train_frames": len(data.state),
        "final_losses": losses,
        "success_threshold": float(model.success_threshold),
        "terminated_threshold": float(model.terminated_threshold),
        "train_wall_s": wall,
    }
    if out is not None:
        out = Path(out)
        extra = {"store": str(Path(store_path).resolve()), "held_out_episodes": held_eps.tolist()}
        save_state_model(model, out / "model", extra)
        (out / "train.json").write_text(json.dumps(summary, indent=2))
    return model, summary


def _tensors(data: Frames, device: str) -> dict[str, torch.Tensor]:
    return {
        "state": torch.from_numpy(data.state).to(device),
        "action": torch.from_numpy(data.action).to(device),
        "reward": torch.from_numpy(data.reward).to(device),
        "is_success": torch.from_numpy(data.is_success.astype(np.float32)).to(device),
        "terminated": torch.from_numpy(data.terminated.astype(np.float32)).to(device),
    }


def _one_step_deltas(data: Frames) -> tuple[np.ndarray, np.ndarray]:
    """``s_t+1 - s_t`` for every frame, and which frames have a stored next state."""
    deltas = np.zeros_like(data.state)
    deltas[:-1] = data.state[1:] - data.state[:-1]
    valid = np.ones(len(data.state), dtype=bool)
    valid[data.ends - 1] = False
    return deltas, valid


def _update(model, opt, t, starts, ends, gen) -> dict[str, float]:
    cfg = model.cfg
    e, b, u = cfg.ensemble, cfg.batch_size, cfg.unroll
    # each member its own bootstrap batch of window starts [E, B]
    g = starts[torch.randint(len(starts), (e, b), generator=gen)]
    state = t["state"][g]
    dyn_loss = torch.zeros(())
    weight = torch.zeros(())
    for k in range(u):
        target_index = g + k + 1
        mask = (target_index < ends[g]).float()  # the target is stored in the same episode
        action = t["action"][torch.minimum(g + k, ends[g] - 1)]
        state = model.next(state, action)
        target = t["state"][torch.minimum(target_index, ends[g] - 1)]
        err = ((model.normalize(state) - model.normalize(target)) ** 2).mean(dim=-1)
        dyn_loss = dyn_loss + (err * mask).sum()
        weight = weight + mask.sum()
        # a window that ran past its episode keeps rolling on masked (ignored) values
    dyn_loss = dyn_loss / weight.clamp(min=1.0)
    loss = dyn_loss
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"world model loss is {loss.item()} (dynamics {dyn_loss.item()}); lower lr"
        )
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
    opt.step()
    return {"dynamics": dyn_loss.item()}


def _fit_heads(model, t, cfg: StateModelConfig, pos_weight: float, gen, writer, progress) -> dict:
    """Second phase: the reward, success and termination heads on every stored step, with
    the (now fixed) dynamics' mean one-step prediction as input, the same input they get in
    imagination. Precomputed once, so this phase costs seconds."""
    with torch.no_grad():
        predicted = torch.cat(
            [
                model.next(s, a).mean(dim=0)
                for s, a in zip(t["state"].split(4096), t["action"].split(4096), strict=True)
            ]
        )
    opt = torch.optim.AdamW(model.heads.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    weight = torch.tensor(pos_weight)
    bar = tqdm(range(cfg.head_steps), desc="world model heads", disable=not progress)
    losses: dict[str, float] = {}
    for step in bar:
        h = torch.randint(len(predicted), (cfg.batch_size,), generator=gen)
        reward, success_logit, terminated_logit = model.outcome(
            t["state"][h], t["action"][h], predicted[h]
        )
        bce = F.binary_cross_entropy_with_logits
        success_loss = bce(success_logit, t["is_success"][h], pos_weight=weight)
        terminated_loss = bce(terminated_logit, t["terminated"][h], pos_weight=weight)
        reward_loss = F.mse_loss(reward, t["reward"][h])
        loss = success_loss + terminated_loss + reward_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses = {
            "success": success_loss.item(),
            "terminated": terminated_loss.item(),
            "reward": reward_loss.item(),
        }
        if writer and (step % 50 == 0 or step == cfg.head_steps - 1):
            for k, v in losses.items():
                writer.add_scalar(f"world_model/{k}", v, cfg.steps + step)
    return losses


@torch.no_grad()
def calibrate_thresholds(model: StateWorldModel, held: Frames) -> None:
    """Logit thresholds at which the heads call as many held-out steps successful (and
    terminal) as really were: a head weighted towards the rare successes over-calls them, and
    an imagined episode gives it ~50 chances to call one falsely."""
    s, a = torch.from_numpy(held.state), torch.from_numpy(held.action)
    _, success_logit, terminated_logit = model.outcome(s, a, model.next(s, a).mean(dim=0))
    for logit, labels, buffer in (
        (success_logit, held.is_success, model.success_threshold),
        (terminated_logit, held.terminated, model.terminated_threshold),
    ):
        positives = int(labels.sum())
        if 0 < positives < len(labels):
            ranked = logit.sort(descending=True).values
            buffer.fill_(float(0.5 * (ranked[positives - 1] + ranked[positives])))


@torch.no_grad()
def fit_residual_std(model: StateWorldModel, data: Frames) -> None:
    """Per-feature std of the stored next state around the members' mean one-step prediction,
    on the training steps. A deterministic model regresses to the average outcome (a box that
    in reality sometimes slips off the pusher always slides straight in it), which makes the
    imagination optimistic; the imagination samples this noise to keep the spread."""
    _, valid = _one_step_deltas(data)
    index = torch.from_numpy(np.flatnonzero(valid))
    s, a = torch.from_numpy(data.state), torch.from_numpy(data.action)
    residuals = torch.cat(
        [s[i + 1] - model.next(s[i], a[i]).mean(dim=0) for i in index.split(8192)]
    )
    model.residual_std.copy_(residuals.std(dim=0))
