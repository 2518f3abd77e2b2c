"""DSRL with rollout workers and the learner on Ray (``runner=ray``): the same :class:`DSRL`
learner and the same :func:`train_dsrl` loop as on one machine, fed by Ray actors.

::

    driver --starts--> LearnerActor (a GPU when asked) --owns--> RolloutWorker x N (CPUs)

    RolloutWorker  its own vector of task environments (a VectorCollector) and an acting copy
                   of the learner (the frozen base + the noise actor), batched inference
    LearnerActor   train_dsrl(collector=RayCollector): the updates, evaluations and
                   checkpoints of the one-machine run

The collection is asynchronous: a worker that hands in a batch is sent its next call with the
newest noise-actor weights. While the weights stay the same (warm-up, collection alone) each
worker keeps ``calls_in_flight`` calls queued, so it never waits for the learner's answer; once
the learner updates between calls, a worker's next call waits for the learner's next round, so
no batch is acted by weights the learner has already moved past (``queue_while_learning``
keeps the queue full anyway, for a learner that keeps up with its workers).
The update-to-data ratio is kept exactly: ``utd_ratio`` updates per transition that reaches the
replay buffer. Transitions reach it a whole episode at a time (the collector holds an episode's
chunks until its last one arrives), so when a worker dies its partial episodes are dropped, never
half-learned from; Ray restarts the worker and it starts new episodes.
The learner writes its resumable checkpoint at every evaluation; if the learner process dies, the
driver restarts it and it continues from that checkpoint.

``ray.init(address=...)`` joins an existing cluster; without an address a local one is started.
The base policy's checkpoint files travel to the workers through Ray's object store, so workers
on other machines need no shared filesystem (a steered base still reads its own base from the
path in its config).
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from robot_rl.core.task import TaskConfig
from robot_rl.distributed.shipping import Shipped, ShippedCheckpoint, checkpoint_files
from robot_rl.improvers.collectors import Transitions, VectorCollector
from robot_rl.improvers.dsrl import DSRL, DSRLConfig
from robot_rl.improvers.online import History, task_vector_env, train_dsrl


@dataclass
class RayRunnerConfig:
    """Settings of ``runner=ray`` (``configs/runner/ray.yaml``)."""

    workers: int = 2
    """rollout worker actors"""
    envs_per_worker: int | None = None
    """environments each worker steps in lock-step with one batched policy call; None: the
    improver's ``n_envs`` (each worker collects like the one-machine run, so ``workers``
    times as many environments run in all)"""
    vector_steps_per_call: int = 1
    """vector steps (one chunk per environment each) a worker takes per call. More amortise
    the call's overhead (a worker's rate 1,200 -> 1,535 env steps/s on push from 1 to 4) but
    hand the learner bigger rounds of data from one version of the weights; DSRL on push
    learned less at 4 (see the README's scale figures)"""
    sync: bool = False
    """wait for every worker each round and send them all the newest weights (each batch is
    collected by the weights of its round, in rounds as big as all workers' calls); False
    sends a worker its next call as soon as its batch arrives (collection overlaps the updates;
    while the learner updates, a worker's next call is sent at the next round with the newest
    weights unless ``queue_while_learning``)"""
    calls_in_flight: int = 2
    """calls queued at each worker while the learner's weights stay the same (overlapped
    mode; sync rounds use one): a worker starts its next batch the moment it returns one
    (2 workers collected 1.50-1.69x the one-process rate on push, 1.23x with 1). Once the
    learner updates between calls, each worker gets one call at a time with the newest weights
    (see ``queue_while_learning``)"""
    queue_while_learning: bool = False
    """keep ``calls_in_flight`` calls queued while the learner updates too: workers never
    wait, but queued batches are acted by weights one or two rounds old, and DSRL on push
    learned less that way (median 0.25-0.37 against 0.58 in one process; see the README's
    scale figures). For a learner that keeps up with its workers (a GPU, many workers)"""
    cpus_per_worker: float = 1.0
    """logical CPUs Ray reserves per worker"""
    learner_cpus: float = 1.0
    """logical CPUs Ray reserves for the learner"""
    learner_gpus: float = 0.0
    """GPUs for the learner (set the improver's ``sac.device=cuda`` with it)"""
    address: str | None = None
    """Ray cluster to join (``auto``, ``ray://host:10001``, ...); None starts a local one"""
    num_cpus: int | None = None
    """logical CPUs of a local cluster; None: enough for the learner and the workers"""
    max_worker_restarts: int = 20
    """times Ray restarts each dead worker before the run fails"""
    restart_timeout_s: float = 300.0
    """a dead worker that is not back within this many seconds fails the run"""
    max_learner_restarts: int = 3
    """times the driver restarts a dead learner (it resumes from ``out/checkpoint``)"""

    def __post_init__(self) -> None:
        if self.workers < 1 or self.vector_steps_per_call < 1:
            raise ValueError(
                f"workers and vector_steps_per_call must be >= 1, got {self.workers}, "
                f"{self.vector_steps_per_call}"
            )
        if self.calls_in_flight < 1:
            raise ValueError(f"calls_in_flight must be >= 1, got {self.calls_in_flight}")
        if self.envs_per_worker is not None and self.envs_per_worker < 1:
            raise ValueError(f"envs_per_worker must be >= 1 or None, got {self.envs_per_worker}")
        if self.max_worker_restarts < 0 or self.max_learner_restarts < 0:
            raise ValueError("max_worker_restarts and max_learner_restarts must be >= 0")


@dataclass
class WorkerSpec:
    """Everything a rollout worker builds itself from (plain data, nothing unpickles code)."""

    task: TaskConfig
    cfg: DSRLConfig
    obs_dim: int
    n_envs: int
    seed: int


class RolloutWorker:
    """A Ray actor: environments and an acting copy of the learner (built from the base's
    checkpoint files)."""

    def __init__(self, spec: WorkerSpec, base: ShippedCheckpoint):
        import ray

        torch.set_num_threads(1)
        seed = spec.seed
        with warnings.catch_warnings():  # Ray's property reads a deprecated field of its own
            warnings.simplefilter("ignore", DeprecationWarning)
            restarted = ray.get_runtime_context().was_current_actor_reconstructed
        if restarted:
            seed += 7919 * (os.getpid() % 10_007)  # a restarted worker plays new episodes
        cfg = replace(spec.cfg, seed=seed, sac=replace(spec.cfg.sac, device="cpu"))
        self.learner = DSRL(base.policy(), spec.obs_dim, cfg)
        env = task_vector_env(spec.task, self.learner, spec.n_envs, cfg.async_envs)
        self.collector = VectorCollector(env, seed)
        self.incarnation = uuid.uuid4().hex
        self._version: int | None = None

    def collect(
        self,
        weights: Shipped,
        version: int,
        warmup: bool,
        vector_steps: int,
        gamma: float,
    ) -> tuple[Transitions, dict[str, float], str]:
        """A batch, the cumulative timings and this process's incarnation (new after a
        restart, so the learner notices a restart that fell between two calls). The weights
        are fetched and loaded only when their version changed (a restarted worker has none)."""
        if version != self._version:
            self.learner.load_acting_weights(weights.get())
            self._version = version
        batch = self.collector.collect(self.learner, warmup, vector_steps, gamma)
        return batch, dict(self.collector.timings), self.incarnation

    def pid(self) -> int:
        return os.getpid()

    def current_incarnation(self) -> str:
        return self.incarnation


class EpisodeAssembler:
    """Holds each (worker, environment)'s chunk transitions until its episode's last chunk
    arrives, so only whole episodes reach the learner; a dead worker's partial episodes are
    dropped."""

    def __init__(self):
        self._pending: dict[tuple[int, int], list[Transitions]] = {}
        self.completed = self.successes = self.dropped = 0

    def add(self, worker: int, batch: Transitions) -> list[Transitions]:
        """The episodes that ``batch`` completes (rows in their original order)."""
        finished = []
        for env_id in np.unique(batch.env_id):
            rows = batch.rows(batch.env_id == env_id)
            buffer = self._pending.setdefault((worker, int(env_id)), [])
            start = 0
            for end in np.flatnonzero(rows.done):
                buffer.append(rows.rows(slice(start, end + 1)))
                finished.append(Transitions.concat(buffer))
                buffer.clear()
                start = end + 1
                self.completed += 1
                self.successes += int(rows.success[end])
            if start < len(rows):
                buffer.append(rows.rows(slice(start, None)))
        return finished

    def drop(self, worker: int) -> int:
        """Forgets ``worker``'s partial episodes; returns how many transitions they held."""
        dropped = 0
        for key in [k for k in self._pending if k[0] == worker]:
            dropped += sum(len(t) for t in self._pending.pop(key))
        self.dropped += dropped
        return dropped


class RayCollector:
    """Collector of :func:`train_dsrl` whose environments live in Ray rollout workers."""

    def __init__(
        self,
        task: TaskConfig,
        base: dict[str, bytes] | ShippedCheckpoint,
        cfg: DSRLConfig,
        obs_dim: int,
        runner: RayRunnerConfig,
    ):
        import ray

        self.runner = runner
        n_envs = runner.envs_per_worker or cfg.n_envs
        self.base = ShippedCheckpoint.of(base)  # held: restarted workers read it again
        worker_cls = ray.remote(
            num_cpus=runner.cpus_per_worker, max_restarts=runner.max_worker_restarts
        )(RolloutWorker)
        self.workers = [
            worker_cls.remote(
                WorkerSpec(task, cfg, obs_dim, n_envs, cfg.seed + 1_000 * (i + 1)), self.base
            )
            for i in range(runner.workers)
        ]
        self._inflight: dict = {}  # object ref -> worker index, in the order of dispatch
        self.episodes = EpisodeAssembler()
        self.failures = [0] * runner.workers
        self._incarnations: list[str | None] = [None] * runner.workers
        self._down_since: list[float | None] = [None] * runner.workers
        self._weights, self._weights_version = None, None
        self._held: list[Transitions] = []  # episodes received by drain()
        self.restarts = 0
        self.env_steps = 0
        self.timings: list[dict[str, float]] = [{} for _ in self.workers]
        self.n_workers = runner.workers
        self.started = time.perf_counter()
        self.first_batch_at: tuple[float, int] | None = None  # (time, env steps) at the first batch

    def collect(self, actor: DSRL, warmup: bool, gamma: float = 0.99) -> Transitions:
        """Whole episodes received since the last call (at least one); idle workers are sent
        their next call first, with ``actor``'s current weights (put into the object store
        once per new version).

        While the weights stay the same between calls (warm-up, collection alone), each worker
        keeps ``calls_in_flight`` calls queued. Once the learner updates between calls, a
        worker that hands in a batch gets its next call only at the next :meth:`collect`, with
        the newest weights, so no queued call acts with weights the learner has moved past
        (unless ``queue_while_learning``)."""
        import ray

        version = actor.sac.updates
        learning = self._weights_version is not None and version != self._weights_version
        if version != self._weights_version:
            self._weights = Shipped.of(actor.acting_weights())
            self._weights_version = version
        call = (self._weights, version, warmup, self.runner.vector_steps_per_call, gamma)
        # sync rounds and fresh-only calls: one call per worker, none sent after a return
        one_call = self.runner.sync or (learning and not self.runner.queue_while_learning)
        depth = 1 if one_call else self.runner.calls_in_flight
        self._fill(call, depth)
        if self._held:
            held, self._held = self._held, []
            return Transitions.concat(held)
        while True:
            wait_for = len(self._inflight) if self.runner.sync else 1
            ray.wait(list(self._inflight), num_returns=wait_for)
            ready, _ = ray.wait(list(self._inflight), num_returns=len(self._inflight), timeout=0)
            ready = set(ready)
            episodes: list[Transitions] = []
            # every finished call, oldest first (a worker's calls finish in the order sent)
            for ref in [r for r in self._inflight if r in ready]:
                episodes += self._receive(ref)
            if not (episodes and one_call):  # returning: the next call waits for new weights
                self._fill(call, depth)
            if episodes:
                return Transitions.concat(episodes)

    def drain(self) -> None:
        """Waits for the calls in flight and sends no new ones (their episodes are kept for
        the next :meth:`collect`), so the workers go idle."""
        import ray

        ray.wait(list(self._inflight), num_returns=len(self._inflight))
        for ref in list(self._inflight):
            self._held += self._receive(ref)

    def _receive(self, ref) -> list[Transitions]:
        """The whole episodes a finished call completes; a failed call marks its worker down."""
        import ray

        i = self._inflight.pop(ref)
        try:
            batch, timings, incarnation = ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as e:
            self._down(i, e)
            return []
        if self._down_since[i] is None and self._incarnations[i] not in (None, incarnation):
            self._lost(i, RuntimeError("restarted between two calls"))  # died and came back
        self._down_since[i] = None
        self._incarnations[i] = incarnation
        self.timings[i] = timings
        self.env_steps += batch.env_steps
        if self.first_batch_at is None:
            self.first_batch_at = (time.perf_counter(), self.env_steps)
        return self.episodes.add(i, batch)

    def _fill(self, call: tuple, depth: int) -> None:
        """Tops every worker up to ``depth`` calls in flight."""
        for i in range(len(self.workers)):
            for _ in range(depth - sum(1 for w in self._inflight.values() if w == i)):
                self._inflight[self.workers[i].collect.remote(*call)] = i

    def _down(self, i: int, error: Exception) -> None:
        """A call to worker ``i`` failed: the first failure counts a restart; calls failing
        while Ray brings it back do not, unless it stays down longer than ``restart_timeout_s``."""
        now = time.perf_counter()
        if self._down_since[i] is None:
            self._down_since[i] = now
            self._lost(i, error)
        elif now - self._down_since[i] > self.runner.restart_timeout_s:
            raise RuntimeError(
                f"rollout worker {i} has not come back in {self.runner.restart_timeout_s} s "
                f"(Ray gives up after max_worker_restarts={self.runner.max_worker_restarts}); "
                f"last error: {error}"
            ) from error
        else:
            time.sleep(0.05)  # it is restarting; ask again shortly

    def _lost(self, i: int, error: Exception) -> None:
        """Worker ``i`` died: drop its partial episodes; Ray restarts it. A worker that cannot
        even start (bad settings, a missing module) fails the run at once."""
        if getattr(error, "_actor_init_failed", False):
            raise RuntimeError(f"rollout worker {i} failed to start: {error}") from error
        self.failures[i] += 1
        self.restarts += 1
        self.episodes.drop(i)
        if self.failures[i] > self.runner.max_worker_restarts:
            raise RuntimeError(
                f"rollout worker {i} died {self.failures[i]} times (max_worker_restarts="
                f"{self.runner.max_worker_restarts}); last error: {error}"
            ) from error

    def worker_pids(self) -> list[int]:
        import ray

        return ray.get([w.pid.remote() for w in self.workers])

    def stats(self) -> dict:
        """Collection figures; the rate counts from the first batch (worker start-up, which
        imports torch and MuJoCo and loads the base, is reported apart)."""
        now = time.perf_counter()
        t0, steps0 = self.first_batch_at or (now, self.env_steps)
        return {
            "workers": self.n_workers,
            "env_steps": self.env_steps,
            "env_steps_per_s": (self.env_steps - steps0) / max(now - t0, 1e-9),
            "startup_s": t0 - self.started,
            "worker_restarts": self.restarts,
            "dropped_transitions": self.episodes.dropped,
            "episodes": self.episodes.completed,
            "train_success_rate": self.episodes.successes / max(self.episodes.completed, 1),
            "worker_timings": self.timings,
        }

    def close(self) -> None:
        """Settles the count of restarts (a worker killed near the end may still be coming
        back: waits for it up to ``restart_timeout_s``), then stops the workers."""
        import ray

        timeout = self.runner.restart_timeout_s
        for ref in list(self._inflight):
            if ray.wait([ref], timeout=timeout)[0]:
                self._held += self._receive(ref)
        for i, worker in enumerate(self.workers):
            try:
                now = ray.get(worker.current_incarnation.remote(), timeout=timeout)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                continue
            if self._down_since[i] is None and self._incarnations[i] not in (None, now):
                self._lost(i, RuntimeError("restarted while idle"))
        for worker in self.workers:
            ray.kill(worker, no_restart=True)
        self.workers, self._inflight = [], {}


class LearnerActor:
    """A Ray actor running :func:`train_dsrl` with a :class:`RayCollector`."""

    def __init__(
        self,
        task: TaskConfig,
        base: ShippedCheckpoint,
        cfg: DSRLConfig,
        obs_dim: int,
        runner: RayRunnerConfig,
        out: str | None,
        base_success: float | None,
        threads: int,
    ):
        torch.set_num_threads(threads)
        self.task, self.base, self.cfg = task, base, cfg
        self.obs_dim, self.runner, self.out, self.base_success = obs_dim, runner, out, base_success
        self.learner = DSRL(base.policy(cfg.sac.device), obs_dim, cfg)
        self.collector: RayCollector | None = None

    def train(self) -> dict:
        self.collector = RayCollector(self.task, self.base, self.cfg, self.obs_dim, self.runner)
        history = train_dsrl(
            self.learner,
            self.task,
            out=self.out,
            progress=False,
            base_success=self.base_success,
            collector=self.collector,
        )
        return {
            "history": asdict(history),
            "collector": self.collector.stats(),
            "pid": os.getpid(),
        }

    def status(self) -> dict:
        collector = self.collector
        return {
            "env_steps": collector.env_steps if collector else 0,
            "worker_restarts": collector.restarts if collector else 0,
            "pid": os.getpid(),
        }

    def worker_pids(self) -> list[int]:
        return self.collector.worker_pids() if self.collector else []

    def pid(self) -> int:
        return os.getpid()

    def acting_weights(self) -> dict[str, np.ndarray]:
        return self.learner.acting_weights()


def kill_worker_after(learner, env_steps: int, worker: int = 0) -> threading.Thread:
    """Fault drill: once the learner has received ``env_steps`` env steps, ``kill -9`` rollout
    worker ``worker`` (Ray restarts it). Returns the (daemon) thread doing it."""
    import ray

    def drill():
        while ray.get(learner.status.remote())["env_steps"] < env_steps:
            time.sleep(0.2)
        os.kill(ray.get(learner.worker_pids.remote())[worker], signal.SIGKILL)

    thread = threading.Thread(target=drill, daemon=True)
    thread.start()
    return thread


@dataclass
class RayRun:
    """What :func:`train_dsrl_ray` returns: the learner's history, the collection figures and
    the noise actor's final weights (load them with ``DSRL.load_acting_weights``)."""

    history: History
    collector: dict
    weights: dict[str, np.ndarray]
    learner_crashes: int
    wall_s: float


def init_ray(runner: RayRunnerConfig) -> bool:
    """Joins ``runner.address`` or starts a local cluster; True when this call started Ray."""
    import ray

    if ray.is_initialized():
        return False
    if runner.address:
        ray.init(address=runner.address, log_to_driver=True)
        return True
    needed = runner.learner_cpus + runner.workers * runner.cpus_per_worker
    num_cpus = runner.num_cpus or max(os.cpu_count() or 1, int(np.ceil(needed)))
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=True)
    return True


def train_dsrl_ray(
    base_path: str | Path,
    task: TaskConfig,
    cfg: DSRLConfig,
    obs_dim: int,
    runner: RayRunnerConfig,
    out: str | Path | None = None,
    progress: bool = True,
    base_success: float | None = None,
    on_start=None,
) -> RayRun:
    """DSRL with ``runner.workers`` Ray rollout workers and a Ray learner; the driver shows a
    progress bar and restarts a dead learner (which resumes from ``out/checkpoint``).

    ``on_start(learner_handle)`` is called once, when the learner starts training (tests and
    the scale benchmark use it to reach the workers). ``learner_crashes`` counts the learner
    processes that died (distinct learner processes seen, minus one)."""
    import ray

    started = init_ray(runner)
    base = ShippedCheckpoint.of(checkpoint_files(base_path))  # held here for learner restarts
    learner_cls = ray.remote(
        num_cpus=runner.learner_cpus,
        num_gpus=runner.learner_gpus,
        max_restarts=runner.max_learner_restarts,
        max_concurrency=2,  # status() answers while train() runs
    )(LearnerActor)
    threads = max(1, int(runner.learner_cpus))
    learner = learner_cls.remote(
        task, base, cfg, obs_dim, runner, str(out) if out else None, base_success, threads
    )
    bar = tqdm(total=cfg.env_steps, desc=f"dsrl-{cfg.variant} {task.name} (ray)", unit="step")
    bar.disable = not progress
    start, pids, down_since = time.perf_counter(), set(), None
    try:
        done = learner.train.remote()
        if on_start is not None:
            on_start(learner)
        while True:
            if ray.wait([done], timeout=1.0)[0]:
                try:
                    result = ray.get(done)
                    pids.add(result["pid"])
                    break
                except ray.exceptions.RayActorError as err:
                    # the learner died (or is restarting); Ray brings it back within its
                    # max_restarts and train() resumes from out/checkpoint
                    down_since = down_since or time.perf_counter()
                    gave_up = not isinstance(err, ray.exceptions.ActorUnavailableError) and (
                        len(pids) - 1 >= runner.max_learner_restarts
                    )
                    if gave_up or time.perf_counter() - down_since > runner.restart_timeout_s:
                        raise RuntimeError(
                            f"the learner died and did not come back (restarts so far: "
                            f"{max(len(pids) - 1, 0)}, max_learner_restarts="
                            f"{runner.max_learner_restarts}): {err}"
                        ) from err
                    time.sleep(1.0)
                    done = learner.train.remote()
                    continue
            try:
                status = ray.get(learner.status.remote(), timeout=10.0)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                continue  # restarting: the next ray.wait sees train() fail
            down_since = None
            pids.add(status["pid"])
            bar.n = min(status["env_steps"], cfg.env_steps)
            bar.set_postfix(restarts=status["worker_restarts"], learner_restarts=len(pids) - 1)
        weights = ray.get(learner.acting_weights.remote())
    finally:
        bar.close()
        ray.kill(learner, no_restart=True)
        if started:
            ray.shutdown()
    return RayRun(
        history=History(**result["history"]),
        collector=result["collector"],
        weights=weights,
        learner_crashes=max(len(pids) - 1, 0),
        wall_s=time.perf_counter() - start,
    )
