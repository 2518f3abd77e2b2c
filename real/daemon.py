"""The deployment daemon: a fixed-rate control loop that runs a chunk policy on a robot behind
its safety layer, lets an operator take over or stop it, and records every episode.

Threads: the *control* thread ticks at ``rate_hz`` (read -> choose -> write -> record);
inference turns observation histories into timed chunks (:mod:`real.chunks`) in a process of
its own (``inference="process"``, :mod:`real.inference`: what ``robot-rl serve`` runs, so that
it never holds the control thread's interpreter lock) or on a thread (``"thread"``: policies
given as objects, fake clocks in tests); the control API's threads only set requests that the
control thread applies at its next tick, so no request can block or skip a tick. Blocking
work (driver reset, the first chunk, the store append) happens between episodes, and the loop
re-phases after it.

One tick of an episode::

    read (safety: NaN, age) -> reward of the previous step -> stop? success? step limit?
    -> newest chunk adopted (stale actions dropped) -> next chunk requested (prefetch)
    -> action: human (intervention) | chunk | hold -> safety.write -> step recorded

Episodes go to the episode store when they end (success, step limit, stop request, safe stop
or driver loss), with per-step ``intervention``, ``safety_event``, ``aborted`` flags, the
chunk bookkeeping (``chunk_id``, ``chunk_step``, ``latent_noise``) and the label.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from real.chunks import ChunkSchedule, InferenceWorker
from real.metrics import Metrics
from real.safety import SafetyLayer
from robot_rl.core import keys
from robot_rl.core.driver import TIMESTAMP
from robot_rl.core.policy import ChunkPolicy
from robot_rl.data.schema import StoreError

log = logging.getLogger(__name__)
DRIVER_ERRORS = (ConnectionError, OSError, TimeoutError)
MIN_SLEEP_S = 0.0005  # every tick yields the CPU, however late it is


class DaemonError(RuntimeError):
    """A request that cannot be served now (the API answers 409 with the message)."""


@dataclass(frozen=True)
class DaemonConfig:
    """How the control loop runs."""

    rate_hz: float = 30.0
    """control rate (10-50 Hz)"""
    max_episode_steps: int = 300
    """an episode ends (truncated) after this many control steps"""
    prefetch: int = 2
    """request the next chunk when this many actions of the current one are left (-1: only
    when it is used up, i.e. synchronous chunk execution)"""
    wait_for_chunk_s: float = 0.0
    """how long a tick may wait for a chunk in flight (0 in real time: hold instead; > 0 for
    synchronous execution with a fake clock or latent-noise steering)"""
    first_chunk_timeout_s: float = 10.0
    """wait at episode start for the first chunk (the policy's warm-up)"""
    deadline_slack: float = 0.5
    """a tick that starts later than this fraction of a period is a missed deadline"""
    terminate_on_success: bool = True
    """end the episode when the robot reports success (simulated robots)"""
    seed: int = 0
    """seed of the latent noise drawn for steerable policies"""
    inference: str = "thread"
    """where chunk inference runs: 'process' (a spawned child that loads checkpoints from
    their folders; what ``robot-rl serve`` uses) or 'thread' (policy objects, fake clocks)"""
    inference_nice: int = -5
    """nice value of the inference process (below the real-time control thread, above batch
    work on the same cores); ignored where not permitted"""

    def __post_init__(self) -> None:
        if self.inference not in ("thread", "process"):
            raise ValueError(f"inference must be 'thread' or 'process', got {self.inference!r}")
        if not 1.0 <= self.rate_hz <= 1000.0:
            raise ValueError(f"rate_hz must be in [1, 1000], got {self.rate_hz}")
        if self.max_episode_steps < 1 or self.prefetch < -1:
            raise ValueError("max_episode_steps must be >= 1 and prefetch >= -1")


@dataclass
class _Episode:
    index: int
    seed: int | None
    history: deque
    frames: dict[str, list] = field(default_factory=dict)
    steps: int = 0
    label: bool | None = None
    stop: bool = False
    success_seen: bool = False


class RobotDaemon:
    """Owns the safety layer (and through it the driver), the inference worker and the store."""

    def __init__(
        self,
        safety: SafetyLayer,
        cfg: DaemonConfig,
        store_path: str | Path | None,
        task_name: str,
        robot_name: str,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.safety, self.cfg = safety, cfg
        self.period = 1.0 / cfg.rate_hz
        self.clock, self.sleep = clock, sleep
        self.store_path = Path(store_path) if store_path else None
        self.task_name, self.robot_name = task_name, robot_name
        self.metrics = Metrics(cfg.rate_hz)
        if cfg.inference == "process":
            from real.inference import InferenceProcess

            self.worker = InferenceProcess(
                cfg.seed, on_latency=self.metrics.inference, nice=cfg.inference_nice
            )
        else:
            self.worker = InferenceWorker(cfg.seed, on_latency=self.metrics.inference)
        self.schedule = ChunkSchedule(cfg.prefetch)
        self.policy_path: str | None = None
        self.episodes: list[dict[str, Any]] = []
        self._lock = threading.RLock()
        self._episode_done = threading.Condition(self._lock)
        self._pending_start: dict | None = None
        self._ep: _Episode | None = None
        self._intervention = False
        self._teleop: np.ndarray | None = None
        self._store = None
        self._shutdown = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_obs_time: float | None = None
        self._rephase = True

    # ================================================================ life cycle

    def start(self) -> None:
        """Connect the robot and start the control thread."""
        self.safety.connect()
        self._thread = threading.Thread(target=self._control_loop, daemon=True, name="control")
        self._thread.start()

    def shutdown(self) -> None:
        with self._lock:
            if self._ep is not None:
                self._ep.stop = True
        self._shutdown.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.worker.close()
        self.safety.disconnect()
        if self._store is not None:
            self._store.close()

    # ================================================================ operator requests

    def set_policy(self, policy: ChunkPolicy | None, path: str | None = None) -> None:
        """Hand over a policy object (inference on a thread); see :meth:`load_policy`."""
        if self.worker.by_path:
            if policy is not None and path is None:
                raise TypeError(
                    "this daemon runs inference in its own process, which loads checkpoints "
                    "from their folders: give the policy's path (load_policy(path))"
                )
            self.load_policy(path)
            return
        with self._lock:
            self._refuse_while_running()
            if policy is not None:
                self._check_action_dim(policy.action_dim)
            self.worker.set_policy(policy)
            self.policy_path = path

    def load_policy(self, path: str | None, loader: Callable[[str], Any] | None = None) -> dict:
        """Load the checkpoint folder ``path`` (base, steered or offline-improved) between
        episodes: in the inference process, or with ``loader`` (``load_policy``) here."""
        with self._lock:
            self._refuse_while_running()
        if not self.worker.by_path:
            if loader is None:
                raise DaemonError("this daemon was started without a policy loader")
            self.set_policy(loader(path) if path is not None else None, path)
            return {"policy": path}
        # The load takes seconds and runs without the daemon's lock (operators can still ask
        # for the status); a start request meanwhile finds the old policy or none.
        previous = self.worker.spec
        spec = self.worker.load(path)
        if spec is not None and spec.action_dim != self.safety.config.action_dim:
            self.worker.load(self.policy_path if previous is not None else None)  # keep the old
            self._check_action_dim(spec.action_dim)
        with self._lock:
            self.policy_path = path
        return {"policy": path}

    def _refuse_while_running(self) -> None:
        if self._ep is not None or self._pending_start is not None:
            raise DaemonError("an episode is running: stop it before loading another policy")

    def _check_action_dim(self, action_dim: int) -> None:
        if action_dim != self.safety.config.action_dim:
            raise ValueError(
                f"policy writes {action_dim}-d actions, the robot takes "
                f"{self.safety.config.action_dim}-d"
            )

    def start_episode(self, seed: int | None = None) -> dict:
        with self._lock:
            if self._ep is not None or self._pending_start is not None:
                raise DaemonError("an episode is already running")
            if self.safety.stopped == "estop":
                raise DaemonError("the e-stop is latched: clear it first (POST /estop/clear)")
            if self.worker.spec is None and not self._intervention:
                raise DaemonError("no policy loaded and no human in control: load a policy first")
            self._pending_start = {"seed": seed}
            self._wake.set()
            return {"episode": len(self.episodes), "seed": seed}

    def stop_episode(self, success: bool | None = None) -> dict:
        with self._lock:
            if self._ep is None and self._pending_start is None:
                raise DaemonError("no episode is running")
            if self._ep is None:
                self._pending_start = None
                return {"stopped": "before start"}
            if success is not None:
                self._ep.label = bool(success)
            self._ep.stop = True
            return {"episode": self._ep.index, "stopping": True}

    def label(self, success: bool) -> dict:
        with self._lock:
            if self._pending_start is not None:  # labelled before its first tick
                self._pending_start["label"] = bool(success)
                return {"episode": len(self.episodes), "label": bool(success)}
            if self._ep is None:
                raise DaemonError(
                    "no episode is running: label during the episode or with POST /episode/stop"
                )
            self._ep.label = bool(success)
            return {"episode": self._ep.index, "label": bool(success)}

    def estop(self) -> dict:
        with self._lock:
            self.safety.estop("operator e-stop")
            self.metrics.safety(self.safety.drain_events())
            if self._ep is not None:
                self._ep.stop = True
        return {"estop": True}

    def clear_estop(self) -> dict:
        with self._lock:
            self.safety.clear_stop()
        return {"estop": False}

    def set_intervention(self, on: bool | None = None, action: Any = None) -> dict:
        """Human takes over (``on``) and/or sends a teleop action (checked by the safety layer
        like any other)."""
        with self._lock:
            if on is not None:
                self._intervention = bool(on)
                if not on:
                    self._teleop = None
            if action is not None:
                a = np.asarray(action, np.float32)
                if a.shape != (self.safety.config.action_dim,):
                    raise ValueError(
                        f"teleop action has shape {a.shape}, the robot takes "
                        f"({self.safety.config.action_dim},)"
                    )
                self._teleop = a
            return {"intervention": self._intervention}

    def status(self) -> dict:
        metrics = self.metrics.snapshot()  # percentiles: not under the lock the loop needs
        with self._lock:
            ep = self._ep
            return {
                "connected": self.safety.is_connected,
                "stopped": self.safety.stopped,
                "episode": None if ep is None else {"index": ep.index, "steps": ep.steps},
                "starting": self._pending_start is not None,
                "intervention": self._intervention,
                "policy": self.policy_path,
                "policy_error": self.worker.error,
                "inference": self.cfg.inference,
                "episodes_recorded": len(self.episodes),
                "last_episode": self.episodes[-1] if self.episodes else None,
                "store": str(self.store_path) if self.store_path else None,
                "metrics": metrics,
            }

    def wait_idle(self, timeout: float) -> bool:
        """Block until no episode is running or starting (tests and the on-robot learner)."""
        with self._episode_done:
            return self._episode_done.wait_for(
                lambda: self._ep is None and self._pending_start is None, timeout
            )

    # ================================================================ the control thread

    def _control_loop(self) -> None:
        if self.sleep is time.sleep:  # a fake clock's loop never blocks: leave it be
            raise_priority("control thread")
        tick_t = self.clock()
        while not self._shutdown.is_set():
            if self._ep is None and self._pending_start is None:
                # Idle: nothing is commanded, so there is no deadline to keep; wake on requests.
                self._wake.wait(self.period)
                self._wake.clear()
                self._rephase = True
                continue
            now = self.clock()
            if self._rephase:
                tick_t, self._rephase = now, False
                self.metrics.break_series()
            late = now - tick_t
            self.metrics.tick(now)
            with self._lock:
                if late > self.cfg.deadline_slack * self.period and self._ep is not None:
                    self.metrics.count("missed_deadlines")
                    self.safety.missed_deadline(late)
                    tick_t = now  # re-phase: never run ticks back to back to catch up
                elif self._ep is not None:
                    self.safety.on_time()
                try:
                    self._tick()
                except Exception:  # noqa: BLE001 - the daemon must stay up and hold the robot
                    log.exception("control tick failed; ending the episode")
                    self._end_episode(aborted="internal_error")
            tick_t += self.period
            self.sleep(max(tick_t - self.clock(), MIN_SLEEP_S))

    def _tick(self) -> None:
        if self._pending_start is not None:
            self._begin_episode(self._pending_start)
            return
        if self._ep is not None:
            self._episode_tick(self._ep)

    def _begin_episode(self, request: dict) -> None:
        # The request stays pending until the episode exists: while the policy warms up (the
        # lock released) the daemon must not look idle to operators or waiters.
        self._rephase = True
        if self.safety.stopped not in (None, "estop"):
            self.safety.clear_stop()  # starting an episode is the operator's decision to resume
        # Collect garbage now and freeze what survives, so that collections during the episode
        # scan only the episode's own young objects (no long pause in a tick).
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self.worker.revive()
        try:
            if not self.safety.is_connected:
                self.safety.connect()
            obs = self.safety.reset_episode(seed=request["seed"])
        except DRIVER_ERRORS as err:
            log.error("episode start failed: %s", err)
            self._pending_start = None
            self.metrics.safety(self.safety.drain_events())
            self.episodes.append({"index": None, "aborted": f"start failed: {err}", "steps": 0})
            self._episode_done.notify_all()
            return
        policy = self.worker.spec
        n_obs = policy.n_obs_steps if policy is not None else 1
        ep = _Episode(len(self.episodes), request["seed"], deque([obs] * n_obs, maxlen=n_obs))
        self.worker.clear()
        self.schedule.clear()
        if policy is not None and not self._intervention:
            self.worker.request(_stack(ep.history), 0)
            self._lock.release()  # let operators talk to us while the policy warms up
            try:
                chunk = self.worker.take(self.cfg.first_chunk_timeout_s)
            finally:
                self._lock.acquire()
            if chunk is not None:
                self.schedule.adopt(chunk, 0)
        ep.label = request.get("label", ep.label)  # labelled during the warm-up
        if self._pending_start is None:  # stopped during the warm-up
            self._episode_done.notify_all()
            return
        self._pending_start, self._ep = None, ep

    def _episode_tick(self, ep: _Episode) -> None:
        try:
            obs = self.safety.read()
        except DRIVER_ERRORS:
            self._end_episode(aborted="driver_error")
            return
        success = bool(obs.get(keys.IS_SUCCESS, False))
        if ep.steps:
            ep.frames[keys.REWARD][-1] = float(success)
            ep.frames[keys.IS_SUCCESS][-1] = success
        ep.success_seen |= success
        if self.safety.stopped is not None:
            self._hold_quietly()
            self._end_episode(aborted=self.safety.stopped)
            return
        if ep.stop:
            self._end_episode()
            return
        if ep.steps and success and self.cfg.terminate_on_success:
            ep.frames[keys.TERMINATED][-1] = True
            self._end_episode()
            return
        if ep.steps >= self.cfg.max_episode_steps:
            self._end_episode()
            return
        ep.history.append(obs)
        action, chunk_id, chunk_step, noise = self._choose(ep)
        try:
            applied = self.safety.write(action)
        except DRIVER_ERRORS:
            self._end_episode(aborted="driver_error")
            return
        events = self.safety.drain_events()
        self.metrics.safety(events)
        self.metrics.count("episode_steps")
        self._last_obs_time = float(obs.get(TIMESTAMP, np.nan))
        self._record(ep, obs, applied, bool(events), chunk_id, chunk_step, noise)

    def _choose(self, ep: _Episode) -> tuple[np.ndarray, int, int, np.ndarray]:
        """(action, chunk id, index in chunk, latent noise) for this tick."""
        k = ep.steps
        policy = self.worker.spec
        dim = policy.noise_dim if policy is not None else 1
        if policy is not None and not self._intervention:
            chunk = self.worker.take()
            if chunk is not None:
                self.schedule.adopt(chunk, k)
            if self.schedule.needs_request(k) and not self.worker.in_flight:
                self.worker.request(_stack(ep.history), k)
            picked = self.schedule.action(k)
            if picked is None and self.cfg.wait_for_chunk_s > 0:
                chunk = self.worker.take(self.cfg.wait_for_chunk_s)
                if chunk is not None:
                    self.schedule.adopt(chunk, k)
                    picked = self.schedule.action(k)
            if picked is not None:
                action, chunk, i = picked
                return action, chunk.chunk_id, i, chunk.noise
            self.metrics.count("starved_ticks")
        elif self._intervention and self._teleop is not None:
            return self._teleop, -1, -1, np.zeros(dim, np.float32)
        return self.safety.hold_action(), -1, -1, np.zeros(dim, np.float32)

    def _hold_quietly(self) -> None:
        try:
            self.safety.write(self.safety.hold_action())
        except DRIVER_ERRORS:
            pass
        self.metrics.safety(self.safety.drain_events())

    def _record(self, ep, obs, applied, event, chunk_id, chunk_step, noise) -> None:
        f = ep.frames
        if not f:
            for k in obs:
                if k == keys.STATE or keys.is_image_key(k):
                    f[k] = []
            for k in (
                keys.ACTION,
                keys.REWARD,
                keys.IS_SUCCESS,
                keys.TERMINATED,
                "intervention",
                "safety_event",
                "chunk_id",
                "chunk_step",
                "latent_noise",
            ):
                f[k] = []
        for k in f:
            if k == keys.STATE or keys.is_image_key(k):
                f[k].append(np.asarray(obs[k]))
        f[keys.ACTION].append(applied)
        f[keys.REWARD].append(0.0)
        f[keys.IS_SUCCESS].append(False)
        f[keys.TERMINATED].append(False)
        f["intervention"].append(self._intervention)
        f["safety_event"].append(event)
        f["chunk_id"].append(chunk_id)
        f["chunk_step"].append(chunk_step)
        f["latent_noise"].append(np.asarray(noise, np.float32))
        ep.steps += 1

    def _end_episode(self, aborted: str | None = None) -> None:
        ep, self._ep = self._ep, None
        self._rephase = True
        self.worker.clear()
        self.schedule.clear()
        if ep is None:
            return
        self.metrics.count("stale_actions_dropped", self.schedule.dropped)
        self.schedule.dropped = 0
        self.metrics.safety(self.safety.drain_events())
        success = ep.label if ep.label is not None else ep.success_seen
        summary = {
            "index": None,
            "steps": ep.steps,
            "success": bool(success),
            "labelled": ep.label is not None,
            "aborted": aborted,
            "seed": ep.seed,
        }
        if aborted:
            self.metrics.count("episodes_aborted")
        if ep.steps and self.store_path is not None:
            summary["index"] = self._append(ep, bool(success), aborted is not None)
        self.episodes.append(summary)
        self._episode_done.notify_all()

    def _append(self, ep: _Episode, success: bool, aborted: bool) -> int | None:
        episode = {
            k: np.asarray(
                v, np.float32 if k in (keys.ACTION, keys.REWARD, "latent_noise") else None
            )
            for k, v in ep.frames.items()
        }
        for k in ("chunk_id", "chunk_step"):
            episode[k] = episode[k].astype(np.int64)
        episode["aborted"] = np.full(ep.steps, aborted, bool)
        try:
            store = self._open_store()
            index = store.append_episode(episode, success=success)
        except (StoreError, ValueError, OSError) as err:
            log.error("episode %d not recorded: %s", ep.index, err)
            return None
        self.metrics.count("episodes_recorded")
        return index

    def _open_store(self):
        if self._store is None:
            from robot_rl.core.task import TaskConfig
            from robot_rl.jobs.collect import open_or_create_store

            task = TaskConfig(self.task_name, "robot", robot=self.robot_name)
            self._store = open_or_create_store(
                self.store_path, task, fps=self.cfg.rate_hz, source="robot_daemon"
            )
        return self._store


def raise_priority(what: str, priority: int = 10) -> None:
    """Real-time scheduling for the calling thread where allowed, as ros2_control does:
    SCHED_FIFO at ``priority``, else a lower nice value, else nothing, so that busy neighbours
    do not delay its wake-ups. The control loop sleeps at least MIN_SLEEP_S every tick, so even
    a loop that overruns every tick cannot starve the rest of the machine."""
    tid = threading.get_native_id()
    try:
        os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(priority))
        return
    except (AttributeError, PermissionError, OSError):
        pass
    try:
        os.setpriority(os.PRIO_PROCESS, tid, -10)
    except (AttributeError, PermissionError, OSError):
        log.info("%s runs at normal priority (no permission to raise it)", what)


def raise_process_priority(nice: int = -10) -> None:
    """A lower nice value for every thread of this process, and so for every thread started
    from them later (Linux threads inherit it). The control thread runs at real-time priority,
    but it still needs the interpreter lock from the process's other threads (API handlers,
    the driver's reader): a lock holder starved by busy neighbours would delay the loop for as
    long as the holder waits for a core (priority inversion)."""
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [threading.get_native_id()]
    for tid in tids:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
        except (AttributeError, PermissionError, OSError):
            log.info("daemon threads run at normal priority (no permission to raise it)")
            return


def _stack(history: deque) -> dict[str, np.ndarray]:
    """``{key: [To, ...]}`` of the observation keys a policy reads (state and cameras)."""
    first = history[0]
    return {
        k: np.stack([o[k] for o in history])
        for k in first
        if k == keys.STATE or keys.is_image_key(k)
    }
