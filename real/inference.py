"""Chunk inference in a process of its own, so that it never holds the control loop's
interpreter lock (a thread in the control process did: the loop's period p99 followed the
inference tail under load).

The parent (the daemon) and the child talk over one ``multiprocessing`` pipe; the child is
started by a ``forkserver`` (never a fork of the threaded daemon; the server has torch imported,
so a restart after a crash is quick) and loads every policy from its checkpoint folder, so
weights cross the process boundary as files, exactly as an operator or the on-robot learner
pushes them::

    parent (control process)                     child (inference process)
    load(path)   -- ("load", path) ------------>  load_policy(path), torch 1 thread
                 <- ("loaded", spec) | ("load_error", message)
    request(obs) -- ("infer", serial, obs, tick) ->  newest request only; older ones skipped
    take()       <- ("chunk", serial, actions, tick, id, noise, latency) | ("error", ...)
    clear()      -- ("reset",) ---------------->  policy.reset(); queued requests dropped

The control thread only ever polls the pipe (``take`` never blocks unless asked to wait, and
never waits for a lock an API thread holds). Results of requests sent before the last
``clear`` are discarded by serial number. If the child dies, :attr:`error` says so and the
next episode start (:meth:`revive`) restarts it with the last policy.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import threading
import time
from pathlib import Path

import numpy as np

from real.chunks import PolicySpec, TimedChunk

log = logging.getLogger(__name__)
PRELOAD = ["real.inference", "torch", "robot_rl.policies.checkpoint", "diffusers"]


class InferenceProcess:
    """The :class:`real.chunks.InferenceWorker` interface over a spawned child process."""

    by_path = True
    """policies are loaded from checkpoint folders (:meth:`load`), in the child"""

    def __init__(
        self,
        seed: int = 0,
        on_latency=None,
        torch_threads: int = 1,
        nice: int = -5,
        load_timeout_s: float = 300.0,
    ):
        self.seed, self.torch_threads, self.nice = seed, torch_threads, nice
        self.load_timeout_s = load_timeout_s
        self._on_latency = on_latency
        self._lock = threading.Lock()  # one user of the pipe at a time
        self._proc = None
        self._conn = None
        self._spec: PolicySpec | None = None
        self._path: str | None = None
        self._serial = 0  # of the last request sent
        self._valid_from = 1  # results of older requests are stale (cleared)
        self._answered = 0  # serial of the newest request answered
        self._result: TimedChunk | None = None
        self._restarts = 0
        self.error: str | None = None

    # ---------------------------------------------------------------- policy

    @property
    def policy(self) -> PolicySpec | None:
        """The loaded policy's :class:`PolicySpec` (the policy itself lives in the child)."""
        return self._spec

    @property
    def spec(self) -> PolicySpec | None:
        return self._spec

    @property
    def path(self) -> str | None:
        return self._path

    def load(self, path: str | os.PathLike | None) -> PolicySpec | None:
        """Load the checkpoint at ``path`` in the child (starting it if needed); returns its
        spec. Raises ``FileNotFoundError``/``ValueError`` with the child's message when the
        folder cannot be loaded (the previous policy stays). ``None`` unloads."""
        with self._lock:
            if path is None:
                if self._alive():
                    self._send(("unload",))
                self._spec, self._path, self._result = None, None, None
                return None
            path = str(path)
            if not Path(path).is_dir():
                raise FileNotFoundError(
                    f"checkpoint folder {path} does not exist (or is not a folder)"
                )
            self._ensure_started()
            self._send(("load", path))
            deadline = time.monotonic() + self.load_timeout_s
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not self._conn.poll(left):
                    raise TimeoutError(f"inference process did not load {path} in time")
                message = self._recv()
                if message is None:
                    raise RuntimeError(f"inference process exited while loading {path}")
                if message[0] == "loaded":
                    self._spec, self._path = PolicySpec(**message[1]), path
                    self._result, self.error = None, None
                    self._valid_from = self._serial + 1
                    self._answered = self._serial
                    return self._spec
                if message[0] == "load_error":
                    kind, text = message[1], message[2]
                    raise (FileNotFoundError if kind == "FileNotFoundError" else ValueError)(text)
                # a chunk of the previous policy arriving late: stale, dropped

    def set_policy(self, policy) -> None:
        raise TypeError(
            "the inference process loads policies from checkpoint folders: call load(path) "
            "(RobotDaemon.load_policy), or run the daemon with inference='thread'"
        )

    def revive(self) -> None:
        """Restart a dead child and reload its policy (between episodes)."""
        with self._lock:
            if self._proc is None or self._alive() or self._path is None:
                return
        path = self._path
        log.error("inference process died (%s); restarting it with %s", self.error, path)
        self._restarts += 1
        self._stop_child()
        self.load(path)

    # ---------------------------------------------------------------- requests

    @property
    def in_flight(self) -> bool:
        return self._answered < self._serial

    def clear(self) -> None:
        """Forget pending requests and results (episode boundaries); reset the policy."""
        with self._lock:
            self._valid_from = self._serial + 1
            self._answered = self._serial
            self._result = None
            if self._alive():
                self._send(("reset",))

    def request(self, obs: dict[str, np.ndarray], obs_tick: int) -> None:
        """Ask for the chunk of ``obs`` (``{key: [To, ...]}``), observed at ``obs_tick``."""
        if not self._lock.acquire(timeout=0.002):
            return  # an API thread holds the pipe (loading): ask again next tick
        try:
            if not self._alive():
                return
            self._serial += 1
            self._send(("infer", self._serial, {k: v[None] for k, v in obs.items()}, obs_tick))
        finally:
            self._lock.release()

    def take(self, wait_s: float = 0.0) -> TimedChunk | None:
        """The newest finished chunk (once), waiting up to ``wait_s`` for one in flight."""
        if not self._lock.acquire(timeout=max(wait_s, 0.002)):
            return None
        try:
            deadline = time.monotonic() + wait_s
            while self._alive():
                left = deadline - time.monotonic()
                waiting = self._result is None and self.in_flight and left > 0
                if not self._conn.poll(left if waiting else 0):
                    break
                message = self._recv()
                if message is not None:
                    self._accept(message)
            result, self._result = self._result, None
            return result
        finally:
            self._lock.release()

    def close(self) -> None:
        with self._lock:
            self._stop_child()

    # ---------------------------------------------------------------- internals

    def _accept(self, message: tuple) -> None:
        kind, serial = message[0], message[1]
        if kind not in ("chunk", "error"):
            return
        self._answered = max(self._answered, serial)
        if serial < self._valid_from:
            return  # asked before the last clear: stale
        if kind == "error":
            self.error = message[2]
            return
        _, _, actions, tick, chunk_id, noise, latency = message
        self._result = TimedChunk(actions, tick, chunk_id, noise, latency)
        if self._on_latency:
            self._on_latency(latency)

    def _alive(self) -> bool:
        if self._proc is None or self._conn is None:
            return False
        if self._proc.is_alive():
            return True
        if self.error is None or not self.error.startswith("inference process"):
            self._dead(f"inference process exited (code {self._proc.exitcode})")
        return False

    def _ensure_started(self) -> None:
        if self._alive():
            return
        self._stop_child()
        # forkserver: a clean single-threaded server process (never a fork of this threaded
        # one) that imports torch and the policies once; a restarted child starts in
        # milliseconds instead of seconds
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_serve,
            args=(child, self.seed + self._restarts, self.torch_threads, self.nice),
            daemon=True,
            name="inference",
        )
        self._proc.start()
        child.close()

    def _send(self, message: tuple) -> None:
        try:
            self._conn.send(message)
        except (BrokenPipeError, OSError) as err:
            self._dead(f"inference process link lost: {err}")

    def _recv(self) -> tuple | None:
        try:
            return self._conn.recv()
        except (EOFError, OSError) as err:
            self._dead(f"inference process exited ({type(err).__name__})")
            return None

    def _dead(self, why: str) -> None:
        if self.error is None or not self.error.startswith("inference process"):
            self.error = why
        self._answered = self._serial  # nothing will answer: not in flight
        if self._proc is not None:
            self._proc.join(timeout=0.01)

    def _stop_child(self) -> None:
        if self._conn is not None:
            try:
                self._conn.send(("close",))
            except (BrokenPipeError, OSError):
                pass
        if self._proc is not None:
            self._proc.join(timeout=0.5)  # nothing to save there: do not wait for its teardown
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(timeout=5)
        if self._conn is not None:
            self._conn.close()
        self._proc, self._conn = None, None


# -------------------------------------------------------------------- the child process


def _serve(conn, seed: int, torch_threads: int, nice: int) -> None:
    """The child: load policies, answer the newest request, until the pipe closes."""
    try:  # absolute: below the control loop (real-time), above batch work
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except (AttributeError, PermissionError, OSError):
        pass
    import torch

    from real.chunks import PolicySpec, infer_chunk

    torch.set_num_threads(torch_threads)
    rng = np.random.default_rng(seed)
    loader = _Loader()
    policy, next_id = None, 0
    try:
        while True:
            messages = [conn.recv()]
            while conn.poll():
                messages.append(conn.recv())
            job = None
            for message in messages:
                kind = message[0]
                if kind == "close":
                    return
                if kind == "infer":
                    job = message  # only the newest request is worth answering
                elif kind == "reset":
                    job = None
                    if policy is not None:
                        policy.reset()
                elif kind == "unload":
                    policy, job = None, None
                elif kind == "load":
                    job = None
                    try:
                        loaded = loader.load(message[1])
                        spec = PolicySpec.of(loaded)  # may refuse it: the old one stays
                        loaded.reset()
                        policy = loaded
                        conn.send(("loaded", spec.__dict__))
                    except Exception as err:  # noqa: BLE001 - report, keep the old policy
                        conn.send(("load_error", type(err).__name__, f"{message[1]}: {err}"))
            if job is None:
                continue
            _, serial, obs, tick = job
            if policy is None:
                conn.send(("error", serial, "no policy loaded"))
                continue
            try:
                start = time.perf_counter()
                actions, noise = infer_chunk(policy, obs, rng)
                latency = time.perf_counter() - start
                conn.send(("chunk", serial, actions, tick, next_id, noise, latency))
                next_id += 1
            except Exception as err:  # noqa: BLE001 - a policy bug must not kill inference
                conn.send(("error", serial, f"{type(err).__name__}: {err}"))
    except (EOFError, BrokenPipeError, ConnectionResetError, KeyboardInterrupt):
        pass  # the daemon is gone
    finally:
        conn.close()


class _Loader:
    """``load_policy`` with the bases of steered policies kept: the on-robot learner pushes a
    new steered checkpoint (a small noise actor over the same frozen base) every episode, and
    only the actor needs reading then."""

    def __init__(self):
        self._bases: dict[tuple[str, float], object] = {}

    def load(self, path: str):
        from robot_rl.improvers.steered import steered_with_base
        from robot_rl.policies.checkpoint import load_policy

        config_file = Path(path) / "config.json"
        try:
            header = json.loads(config_file.read_text())
        except (OSError, ValueError):
            header = {}
        if header.get("policy_class") != "SteeredPolicy":
            return load_policy(path)
        config = header["config"]
        base_path = Path(config["base_path"])
        key = (str(base_path), _mtime(base_path))
        if key not in self._bases:
            self._bases = {key: load_policy(base_path)}
        return steered_with_base(path, config, self._bases[key])


def _mtime(folder: Path) -> float:
    try:
        return max(f.stat().st_mtime for f in folder.iterdir())
    except (OSError, ValueError):
        return 0.0
