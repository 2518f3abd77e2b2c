"""Chunk execution with inference off the control thread (Diffusion Policy's real-robot runner).

Every chunk is stamped with the control tick of the observation it was computed from; action
``i`` of the chunk belongs to tick ``obs_tick + i``. Inference takes time, so when a chunk
arrives some of its first actions are already in the past: they are dropped, never executed
late. The next chunk is requested ``prefetch`` ticks before the current one runs out, so the
robot does not stand still while the policy thinks::

    tick        k     k+1   k+2   k+3   k+4   k+5   k+6   k+7
    chunk A     a0    a1    a2    a3                              (Ta = 4, obs at tick k)
    request B               ^ obs at k+2 (prefetch = 2)
    B arrives                     ^ at k+3: b0 (tick k+2) is stale, dropped
    executed    a0    a1    a2    b1    b2    b3    ...
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from robot_rl.core.policy import ChunkPolicy, SteerableChunkPolicy


@dataclass
class TimedChunk:
    """Executed actions ``[Ta, A]`` for ticks ``obs_tick, obs_tick + 1, ...``."""

    actions: np.ndarray
    obs_tick: int
    chunk_id: int
    noise: np.ndarray
    """the latent noise the base denoised, flattened (zeros [1] for non-steerable policies)"""
    latency_s: float


def noise_dim(policy: ChunkPolicy) -> int:
    """Size of the latent noise recorded per step (1 for a non-steerable policy)."""
    base = getattr(policy, "base", policy)
    if isinstance(base, SteerableChunkPolicy):
        return int(np.prod(base.noise_shape))
    return 1


@dataclass(frozen=True)
class PolicySpec:
    """What the control loop needs to know of a policy that may live in another process."""

    action_dim: int
    n_obs_steps: int
    n_action_steps: int
    noise_dim: int

    @classmethod
    def of(cls, policy: ChunkPolicy) -> PolicySpec:
        """The spec of a policy the daemon can run; refuses one that reads the episode clock,
        which the daemon's observations do not carry."""
        if getattr(policy, "reads_clock", False):
            raise ValueError(
                "this steered policy reads the episode clock (trained with improver.clock=true), "
                "which the daemon's observations do not carry: deploy one trained with clock=false"
            )
        return cls(
            int(policy.action_dim),
            int(policy.n_obs_steps),
            int(policy.n_action_steps),
            noise_dim(policy),
        )


def infer_chunk(
    policy: ChunkPolicy, obs: dict[str, np.ndarray], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``obs {key: [1, To, ...]}`` -> (executed chunk ``[Ta, A]``, latent noise ``[N]``).

    A steered policy's noise actor picks the noise of its base (a stochastic one samples its
    actor with latents drawn from ``rng``, which keeps running across policy reloads); a
    steerable policy denoises noise drawn here, so that the noise can be recorded for
    latent-noise steering."""
    base_noise = getattr(policy, "base_noise", None)
    if base_noise is not None:
        z = None
        if not getattr(policy, "deterministic", True):
            z = rng.standard_normal((1, *policy.noise_shape)).astype(np.float32)
        w = base_noise(obs, z)
        chunk = policy.base.predict_chunk(obs, w)
    elif isinstance(policy, SteerableChunkPolicy):
        w = rng.standard_normal((1, *policy.noise_shape)).astype(np.float32)
        chunk = policy.predict_chunk(obs, w)
    else:
        w = np.zeros((1, 1), np.float32)
        chunk = policy.predict_chunk(obs)
    return np.asarray(chunk[0, : policy.n_action_steps], np.float32), np.asarray(w, np.float32)[
        0
    ].ravel()


class InferenceWorker:
    """A thread that turns observation histories into timed chunks, one request at a time.

    For tests with a fake clock and for policies that exist only as objects; the daemon served
    by ``robot-rl serve`` runs inference in a process of its own
    (:class:`real.inference.InferenceProcess`, same interface) so that it cannot hold the
    control thread's interpreter lock."""

    by_path = False
    """policies are handed over as objects (:meth:`set_policy`), not loaded from a folder"""

    def __init__(self, seed: int = 0, on_latency=None):
        self._cv = threading.Condition()
        self._policy: ChunkPolicy | None = None
        self._spec: PolicySpec | None = None
        self._request: tuple[dict[str, np.ndarray], int] | None = None
        self._result: TimedChunk | None = None
        self._busy = False
        self._closed = False
        self._next_id = 0
        self.error: str | None = None
        self._rng = np.random.default_rng(seed)
        self._on_latency = on_latency
        self._thread = threading.Thread(target=self._run, daemon=True, name="inference")
        self._thread.start()

    @property
    def policy(self) -> ChunkPolicy | None:
        return self._policy

    @property
    def spec(self) -> PolicySpec | None:
        return self._spec

    def revive(self) -> None:
        """Nothing to restart: a thread that raised keeps running (see :attr:`error`)."""

    def set_policy(self, policy: ChunkPolicy | None) -> None:
        """Swap the policy (between episodes); pending work is discarded."""
        spec = PolicySpec.of(policy) if policy is not None else None  # may refuse it
        with self._cv:
            self._policy, self._request, self._result, self.error = policy, None, None, None
            self._spec = spec
            if policy is not None:
                policy.reset()

    def clear(self) -> None:
        with self._cv:
            self._request, self._result = None, None
            if self._policy is not None:
                self._policy.reset()

    @property
    def in_flight(self) -> bool:
        with self._cv:
            return self._busy or self._request is not None

    def request(self, obs: dict[str, np.ndarray], obs_tick: int) -> None:
        """Ask for the chunk of ``obs`` (``{key: [To, ...]}``), observed at ``obs_tick``."""
        with self._cv:
            self._request = ({k: v[None] for k, v in obs.items()}, obs_tick)
            self._cv.notify_all()

    def take(self, wait_s: float = 0.0) -> TimedChunk | None:
        """The newest finished chunk (once), waiting up to ``wait_s`` for one in flight."""
        with self._cv:
            if self._result is None and wait_s > 0 and (self._busy or self._request):
                self._cv.wait_for(lambda: self._result is not None or self._closed, wait_s)
            result, self._result = self._result, None
            return result

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._closed or self._request is not None)
                if self._closed:
                    return
                (obs, tick), self._request = self._request, None
                policy, self._busy = self._policy, True
            chunk = None
            try:
                if policy is not None:
                    start = time.perf_counter()
                    actions, noise = infer_chunk(policy, obs, self._rng)
                    latency = time.perf_counter() - start
                    chunk = TimedChunk(actions, tick, self._next_id, noise, latency)
                    self._next_id += 1
                    if self._on_latency:
                        self._on_latency(latency)
            except Exception as err:  # noqa: BLE001 - a policy bug must not kill the daemon
                self.error = f"{type(err).__name__}: {err}"
            with self._cv:
                self._busy = False
                if policy is self._policy and chunk is not None:
                    self._result = chunk
                self._cv.notify_all()


class ChunkSchedule:
    """Which action belongs to the current tick; drops what is stale."""

    def __init__(self, prefetch: int):
        self.prefetch = prefetch
        self.chunk: TimedChunk | None = None
        self.dropped = 0

    def clear(self) -> None:
        self.chunk = None

    def adopt(self, chunk: TimedChunk, tick: int) -> None:
        """A new chunk replaces what is left of the old one; its past actions are dropped."""
        stale = min(max(0, tick - chunk.obs_tick), len(chunk.actions))
        self.dropped += stale
        self.chunk = chunk

    def action(self, tick: int) -> tuple[np.ndarray, TimedChunk, int] | None:
        """(action, its chunk, index in the chunk) for ``tick``, or None when run out."""
        if self.chunk is None:
            return None
        i = tick - self.chunk.obs_tick
        if 0 <= i < len(self.chunk.actions):
            return self.chunk.actions[i], self.chunk, i
        return None

    def needs_request(self, tick: int) -> bool:
        """True when the current chunk has at most ``prefetch`` actions left after ``tick``."""
        if self.chunk is None:
            return True
        left = self.chunk.obs_tick + len(self.chunk.actions) - 1 - tick
        return left <= self.prefetch
