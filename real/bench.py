"""Daemon suite: ``python -m robot_rl.bench daemon --out FILE.json [key=value ...]``.

On the MuJoCo-backed driver (push): the control loop's period at 30 Hz with the diffusion
policy while another process loads both cores; fault injection (random bad actions, a stalled
sensor link, a disconnect, ``kill -9`` while recording); the control API's token and malformed
requests; DSRL through the daemon. Each figure is measured, none is asserted here.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from real.api import ControlServer
from real.client import DaemonClient
from real.daemon import DaemonConfig, RobotDaemon
from real.onrobot import improve_on_robot
from real.safety import SafetyConfig, SafetyLayer
from real.serve import READY
from real.sim_driver import MujocoDriver
from robot_rl import config
from robot_rl.core.policy import ChunkPolicy
from robot_rl.data import EpisodeStore
from robot_rl.improvers.dsrl import DSRLConfig

ROBOT = "sim_push"
PARTS = ("period", "bad_actions", "faults", "api", "kill9", "dsrl")


@dataclass
class DaemonBench:
    """Settings of the daemon benchmark (``key=value`` on the command line)."""

    policy: str | None = None
    """diffusion checkpoint for push; None: collect demos and pretrain one (pretrain_steps)"""
    pretrain_steps: int = 1000
    """BC steps of the base policy trained when ``policy`` is None"""
    rate_hz: float = 30.0
    """control rate of the period measurement"""
    period_steps: int = 3000
    """control steps measured under load"""
    period_inference: list[str] = field(default_factory=lambda: ["process", "thread"])
    """where chunk inference runs, each measured in turn under the same load; the top-level
    period figures are the first's (what ``robot-rl serve`` runs), the others are prefixed
    with their name (``thread_period_p99_ms``)"""
    load_processes: int = 1
    """BLAS processes (two threads each) loading both cores while the period is measured"""
    bad_actions: int = 10_000
    """random bad actions sent through the daemon"""
    kill9_runs: int = 20
    """daemon processes killed with SIGKILL while recording"""
    dsrl_env_steps: int = 30_000
    """control steps of DSRL training through the daemon (warm-up included), as many as DSRL
    takes in simulation (configs/improver/dsrl.yaml)"""
    dsrl_seed: int = 0
    """seed of the learner and of the training episodes' scenes (evaluations keep theirs)"""
    dsrl_eval_episodes: int = 100
    """episodes of the base and the final evaluation through the daemon (same seeds)"""
    parts: list[str] = field(default_factory=lambda: list(PARTS))
    """which measurements to run (all by default)"""


def run(overrides: list[str]) -> dict:
    opts: DaemonBench = OmegaConf.to_object(
        OmegaConf.merge(OmegaConf.structured(DaemonBench), OmegaConf.from_dotlist(overrides))
    )
    robot = config.load_job("serve", config.ServeJob, [f"robot={ROBOT}"]).robot
    task = config.load_job("eval", config.EvalJob, [f"task={robot['driver']['task']}"]).task.build()
    safety_cfg = SafetyConfig(**robot["safety"])
    figures: dict = {"robot": ROBOT, "task": task.name, "rate_hz": opts.rate_hz}
    with tempfile.TemporaryDirectory(prefix="robot_rl_bench_daemon_") as tmp:
        tmp = Path(tmp)
        policy = opts.policy or _pretrain(task.name, opts.pretrain_steps, tmp)
        figures["policy"] = str(policy)
        measure = {
            "period": lambda: period_under_load(policy, opts, tmp),
            "bad_actions": lambda: bad_actions(task, safety_cfg, opts.bad_actions),
            "faults": lambda: stall_and_disconnect(task, safety_cfg, policy, opts.rate_hz, tmp),
            "api": lambda: api_abuse(task, safety_cfg, policy, opts.rate_hz, tmp),
            "kill9": lambda: kill9(policy, opts.kill9_runs, tmp),
            "dsrl": lambda: dsrl_through_daemon(task, safety_cfg, policy, opts, tmp),
        }
        for part in opts.parts:
            if part not in measure:
                raise ValueError(f"unknown part {part!r}; parts: {list(PARTS)}")
            print(f"[bench daemon] {part}", flush=True)
            figures.update(measure[part]())
    return figures


def _pretrain(task: str, steps: int, tmp: Path) -> str:
    from robot_rl.jobs.collect import collect
    from robot_rl.jobs.pretrain import pretrain_job

    store = tmp / "demos.zarr"
    collect(
        config.load_job(
            "collect",
            config.CollectJob,
            [f"task={task}", f"store={store}", "noise_std=0.2", "suboptimal_prob=0.15"],
        ),
        progress=False,
    )
    out = tmp / "base"
    pretrain_job(
        config.load_job(
            "pretrain",
            config.PretrainJob,
            [f"task={task}", f"store={store}", f"out={out}", f"steps={steps}", "progress=false"],
        )
    )
    return str(out)


# ------------------------------------------------------------------------ the serve process


class _Served:
    """``robot-rl serve`` in its own process; the API URL is read from its ready line."""

    def __init__(self, *overrides: str, env: dict | None = None):
        cmd = [sys.executable, "-m", "robot_rl", "serve", f"robot={ROBOT}", "port=0", *overrides]
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, **(env or {})},
        )
        for line in self.proc.stdout:
            if line.startswith(READY):
                self.client = DaemonClient(line.split()[-1])
                return
        raise RuntimeError(f"serve exited with {self.proc.wait()} before it was ready")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(timeout=60)


def period_under_load(policy: str, opts: DaemonBench, tmp: Path) -> dict:
    """The loop period while BLAS processes keep both cores busy, for each place inference
    can run (side by side, same load)."""
    figures: dict = {"load_processes": opts.load_processes}
    for n, where in enumerate(opts.period_inference):
        if where not in ("process", "thread"):
            raise ValueError(f"period_inference: 'process' or 'thread', got {where!r}")
        prefix = "" if n == 0 else f"{where}_"
        result = _period(policy, opts, tmp / f"period_{where}.zarr", where)
        figures.update({prefix + k: v for k, v in result.items()})
        if n == 0:
            figures["period_inference"] = where
    return figures


def _period(policy: str, opts: DaemonBench, store: Path, inference: str) -> dict:
    loads = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import numpy as np\na = np.random.rand(600, 600)\nwhile True: a @ a",
            ],
            env={**os.environ, "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2"},
        )
        for _ in range(opts.load_processes)
    ]
    served = _Served(
        f"policy={policy}",
        f"store={store}",
        f"rate_hz={opts.rate_hz}",
        "max_episode_steps=300",
        "episodes=1000",
        f"++robot.daemon.inference={inference}",
    )
    try:
        while served.client.status()["metrics"]["episode_steps"] < opts.period_steps:
            time.sleep(0.5)
        metrics = served.client.status()["metrics"]
        load_average = os.getloadavg()
    finally:
        served.stop()
        for load in loads:
            load.kill()
            load.wait()
    events = metrics["safety_events"]
    return {
        "load_average_1min": load_average[0],
        "period_p50_ms": metrics["period_p50_ms"],
        "period_p99_ms": metrics["period_p99_ms"],
        "period_max_ms": metrics["period_max_ms"],
        "period_target_ms": metrics["target_period_ms"],
        "jitter_ms": metrics["jitter_ms"],
        "period_steps": metrics["episode_steps"],
        "inference_p50_ms": metrics["inference_p50_ms"],
        "inference_p99_ms": metrics["inference_p99_ms"],
        "missed_deadlines": metrics["missed_deadlines"],
        "missed_deadline_events": events.get("missed_deadline", 0),
        "missed_deadlines_without_event": max(
            0, metrics["late_periods"] - events.get("missed_deadline", 0)
        ),
        "starved_ticks": metrics["starved_ticks"],
        "stale_actions_dropped": metrics["stale_actions_dropped"],
    }


# ------------------------------------------------------------------------ in-process daemons


class _Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, dt: float) -> None:
        self.t += max(dt, 0.0)


class _Checked:
    """A driver wrapper that judges every action reaching the motors."""

    def __init__(self, driver, cfg: SafetyConfig):
        self.driver, self.cfg = driver, cfg
        self.writes = self.unsafe = 0
        self.previous: np.ndarray | None = None

    def __getattr__(self, name):
        return getattr(self.driver, name)

    @property
    def is_connected(self) -> bool:
        return self.driver.is_connected

    def reset(self, **kwargs):
        self.previous = None  # a new scene starts at rest: the plant's command is zero
        return self.driver.reset(**kwargs)

    def write(self, action):
        a = np.asarray(action)
        bad = a.shape != (self.cfg.action_dim,) or not np.all(np.isfinite(a))
        bad = bad or bool(np.any(a < self.cfg.low - 1e-6) or np.any(a > self.cfg.high + 1e-6))
        prev = self.previous if self.previous is not None else np.zeros_like(a)
        bad = bad or bool(np.any(np.abs(a - prev) > self.cfg.delta + 1e-6))
        self.writes += 1
        self.unsafe += int(bad)
        self.previous = np.asarray(self.driver.write(action), np.float32)
        return self.previous


class _BadPolicy(ChunkPolicy):
    """Every action it emits is bad: NaN, inf, huge, or the wrong shape."""

    action_dim, horizon, n_action_steps, n_obs_steps = 2, 8, 8, 1

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.emitted = 0

    def predict_chunk(self, obs):
        kind = self.rng.integers(4)
        dim = int(self.rng.choice([1, 3, 5])) if kind == 3 else 2
        chunk = self.rng.uniform(-1, 1, (1, self.horizon, dim))
        if kind == 0:
            chunk[..., self.rng.integers(dim)] = np.nan
        elif kind == 1:
            chunk[..., self.rng.integers(dim)] = self.rng.choice([np.inf, -np.inf])
        elif kind == 2:
            chunk *= 10.0 ** self.rng.integers(3, 30)
        self.emitted += self.n_action_steps
        return chunk.astype(np.float32)


def _daemon(driver, cfg: SafetyConfig, dcfg: DaemonConfig, store, clock=None) -> RobotDaemon:
    kwargs = {"clock": clock, "sleep": clock.sleep} if clock else {}
    safety = SafetyLayer(driver, cfg, **({"clock": clock} if clock else {}))
    return RobotDaemon(safety, dcfg, store, "push", ROBOT, **kwargs)


def bad_actions(task, cfg: SafetyConfig, n: int) -> dict:
    clock = _Clock()
    checked = _Checked(MujocoDriver(task, realtime=False, clock=clock), cfg)
    daemon = _daemon(
        checked,
        cfg,
        DaemonConfig(max_episode_steps=200, prefetch=-1, wait_for_chunk_s=10),
        None,
        clock,
    )
    policy = _BadPolicy()
    daemon.set_policy(policy)
    daemon.start()
    try:
        while daemon.safety.total_events.get("bad_action", 0) < n:
            daemon.start_episode()
            daemon.wait_idle(60)
    finally:
        daemon.shutdown()
    return {
        "bad_actions_tried": daemon.safety.total_events.get("bad_action", 0),
        "actions_written": checked.writes,
        "unsafe_actions_reaching_driver": checked.unsafe,
    }


def stall_and_disconnect(task, cfg: SafetyConfig, policy: str, rate: float, tmp: Path) -> dict:
    driver = MujocoDriver(task)
    daemon = _daemon(
        driver,
        cfg,
        DaemonConfig(rate_hz=rate, max_episode_steps=10_000, inference="process"),
        tmp / "faults.zarr",
    )
    daemon.load_policy(policy)
    daemon.start()
    try:
        daemon.start_episode(seed=0)
        time.sleep(1.5)
        t_inject = time.monotonic()
        driver.inject(stall_s=3.0)
        daemon.wait_idle(30)
        kind, t_stop = daemon.safety.last_stop
        stale_at = daemon.safety.last_observation_time + cfg.stale_after_s
        stall = daemon.episodes[-1]
        time.sleep(3.0)  # let the link recover
        daemon.start_episode(seed=1)
        time.sleep(1.5)
        driver.inject(disconnect=True)
        daemon.wait_idle(30)
        lost = daemon.episodes[-1]
        up = daemon._thread.is_alive() and daemon.status()["connected"] is False
        daemon.start_episode(seed=2)  # reconnects: a new physics process
        time.sleep(1.0)
        daemon.stop_episode()
        daemon.wait_idle(30)
        after = daemon.episodes[-1]
        with EpisodeStore.open(tmp / "faults.zarr") as store:
            aborted_flag = bool(store.get_episode(lost["index"])["aborted"].all())
    finally:
        daemon.shutdown()
    return {
        "stale_stop_kind": kind,
        "stale_stop_periods": (t_stop - stale_at) * rate,
        "stall_to_stop_periods": (t_stop - t_inject) * rate,
        "stale_episode_aborted": stall["aborted"],
        "disconnect_episode_aborted": lost["aborted"],
        "disconnect_aborted_flag_recorded": aborted_flag,
        "daemon_up_after_disconnect": bool(up),
        "episode_after_reconnect_ok": after["aborted"] is None and after["steps"] > 0,
    }


def _request(url, method="GET", data=None, token=None) -> int:
    request = urllib.request.Request(url, data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status
    except urllib.error.HTTPError as err:
        return err.code


def api_abuse(task, cfg: SafetyConfig, policy: str, rate: float, tmp: Path) -> dict:
    daemon = _daemon(
        MujocoDriver(task),
        cfg,
        DaemonConfig(rate_hz=rate, max_episode_steps=10_000, inference="process"),
        tmp / "api.zarr",
    )
    daemon.load_policy(policy)
    server = ControlServer(daemon, host="0.0.0.0", port=0, token="bench-token")
    daemon.start()
    server.start()
    url = f"http://127.0.0.1:{server.port}"
    try:
        unauthorised = [
            _request(url + p, m, token=t)
            for p, m in (("/status", "GET"), ("/estop", "POST"), ("/episode/start", "POST"))
            for t in (None, "wrong")
        ] * 10
        daemon.start_episode(seed=0)
        time.sleep(0.5)
        malformed = []
        bodies = [b"{not json", b"[1, 2]", b'{"seed": "x"}', b'{"success": 3}', b"x" * 70_000]
        for i in range(200):
            kind = i % 4
            if kind == 0:
                code = _request(url + "/episode/start", "POST", bodies[i % 5], "bench-token")
            elif kind == 1:
                code = _request(url + "/label", "POST", b"{}", "bench-token")
            elif kind == 2:
                code = _request(url + f"/no/such/{i}", "GET", None, "bench-token")
            else:
                code = _request(url + "/status", "POST", None, "bench-token")
            malformed.append(code)
        steps = daemon.status()["episode"]["steps"]
        daemon.stop_episode()
        daemon.wait_idle(30)
        metrics = daemon.metrics.snapshot()
    finally:
        server.close()
        daemon.shutdown()
    return {
        "api_unauthorized_tried": len(unauthorised),
        "api_unauthorized_refused": sum(c == 401 for c in unauthorised),
        "api_malformed_tried": len(malformed),
        "api_malformed_4xx": sum(400 <= c < 500 for c in malformed),
        "api_episode_steps_during_abuse": steps,
        "api_episode_aborted": daemon.episodes[-1]["aborted"],
        "api_period_p99_ms": metrics["period_p99_ms"],
    }


def kill9(policy: str, runs: int, tmp: Path) -> dict:
    """SIGKILL the serving process at random moments; the store must stay whole."""
    store_path = tmp / "kill9.zarr"
    rng = random.Random(0)
    lost = partial = 0
    completed_before = 0
    for _ in range(runs):
        served = _Served(
            f"policy={policy}",
            f"store={store_path}",
            "rate_hz=50",
            "max_episode_steps=20",
            "episodes=100000",
        )
        deadline = time.monotonic() + rng.uniform(1.5, 4.0)
        reported = 0
        while time.monotonic() < deadline:
            try:
                reported = served.client.status()["metrics"]["episodes_recorded"]
            except (RuntimeError, OSError):
                pass
            time.sleep(0.05)
        served.stop(signal.SIGKILL)
        with EpisodeStore.open(store_path) as store:
            store.validate()
            n = store.n_episodes
            for i in range(n):
                episode = store.get_episode(i)
                lengths = {len(v) for v in episode.values()}
                if len(lengths) != 1 or not episode["chunk_id"].size:
                    partial += 1
        lost += max(0, completed_before + reported - n)
        completed_before = n
    return {
        "kill9_runs": runs,
        "kill9_episodes_in_store": completed_before,
        "completed_episodes_lost": lost,
        "partial_episodes_visible": partial,
    }


def dsrl_through_daemon(task, cfg: SafetyConfig, policy: str, opts: DaemonBench, tmp: Path) -> dict:
    """DSRL-SAC with the daemon as environment; success of the base and of the steered policy
    measured through the daemon too, on the same episode seeds, with Wilson 95% intervals.
    time_scale 3 at 30 Hz runs the task at its own 10 Hz; inference in its own process."""
    from robot_rl.eval.stats import wilson_interval

    driver = MujocoDriver(task, time_scale=3.0)
    store = tmp / "dsrl.zarr"
    # Synchronous chunks wait for inference at each chunk boundary: late ticks there are
    # expected (still reported), and the staleness limit covers one inference.
    cfg = replace(cfg, stale_after_s=0.3, max_missed_deadlines=50)
    daemon = _daemon(
        driver,
        cfg,
        DaemonConfig(
            rate_hz=30,
            max_episode_steps=50,
            prefetch=-1,
            wait_for_chunk_s=2.0,
            inference="process",
            seed=opts.dsrl_seed,
        ),
        store,
    )
    server = ControlServer(daemon, port=0)
    daemon.start()
    server.start()
    client = DaemonClient(server.url)
    improver = config.load_job("improve", config.ImproveJob, []).improver
    dsrl = DSRLConfig(**{k: v for k, v in improver.items() if k != "kind"})
    dsrl.seed = opts.dsrl_seed
    try:
        client.load_policy(policy)
        base = [
            client.run_episode(seed=50_000 + i)["success"] for i in range(opts.dsrl_eval_episodes)
        ]
        start = time.perf_counter()
        learner, result = improve_on_robot(
            client,
            store,
            policy,
            dsrl,
            opts.dsrl_env_steps,
            tmp / "dsrl",
            seed=1000 * opts.dsrl_seed,
            progress=True,
        )
        train_wall = time.perf_counter() - start
        client.load_policy(str(tmp / "dsrl" / "policy"))
        final = [
            client.run_episode(seed=50_000 + i)["success"] for i in range(opts.dsrl_eval_episodes)
        ]
        metrics = daemon.metrics.snapshot()
    finally:
        server.close()
        daemon.shutdown()
    base_rate, final_rate = float(np.mean(base)), float(np.mean(final))
    n = opts.dsrl_eval_episodes
    return {
        "dsrl_base_success": base_rate,
        "dsrl_base_ci95": list(wilson_interval(int(sum(base)), n)),
        "dsrl_final_success": final_rate,
        "dsrl_final_ci95": list(wilson_interval(int(sum(final)), n)),
        "dsrl_gain": final_rate - base_rate,
        "dsrl_gain_ci95": _paired_bootstrap(base, final),
        "dsrl_eval_episodes": n,
        "dsrl_seed": opts.dsrl_seed,
        "dsrl_both_succeeded": int(np.sum(np.array(base) & np.array(final))),
        "dsrl_only_base_succeeded": int(np.sum(np.array(base) & ~np.array(final))),
        "dsrl_only_final_succeeded": int(np.sum(~np.array(base) & np.array(final))),
        "dsrl_train_episodes": result.episodes,
        "dsrl_train_env_steps": result.env_steps,
        "dsrl_train_success_last20": float(np.mean(result.successes[-20:])),
        "dsrl_transitions": result.transitions,
        "dsrl_updates": result.updates,
        "dsrl_pushes": result.pushes,
        "dsrl_train_wall_s": train_wall,
        "dsrl_daemon_safety_events": metrics["safety_events"],
        "dsrl_curve_success": json.dumps(
            [
                float(np.mean(result.successes[i : i + 10]))
                for i in range(0, len(result.successes), 10)
            ]
        ),
    }


def _paired_bootstrap(base: list[bool], final: list[bool], n: int = 10_000) -> list[float]:
    """95% interval of the success gain, resampling the evaluation seeds (both policies ran
    the same seeds, so the pairs are kept together)."""
    diff = np.asarray(final, np.float64) - np.asarray(base, np.float64)
    rng = np.random.default_rng(0)
    means = diff[rng.integers(0, len(diff), (n, len(diff)))].mean(axis=1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]
