"""``robot-rl serve``: build the driver, safety layer, daemon and control API from a
:class:`~robot_rl.config.ServeJob`, then serve until SIGINT/SIGTERM (or ``episodes`` done)."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import Any

from real.api import ControlServer
from real.daemon import DaemonConfig, RobotDaemon, raise_process_priority
from real.safety import SafetyConfig, SafetyLayer
from robot_rl.config import ServeJob

log = logging.getLogger("real.serve")
READY = "robot-rl serve: control API at"  # the line supervisors (and the bench) wait for


def make_driver(robot: dict[str, Any]):
    """Instantiate ``robot["driver"]`` (a ``_target_`` plus its arguments)."""
    from hydra.utils import instantiate

    return instantiate(dict(robot["driver"]), _convert_="all")


def build(job: ServeJob, driver=None) -> tuple[RobotDaemon, ControlServer]:
    """The daemon and its (not yet started) control API; ``driver`` overrides the config's."""
    from robot_rl.policies.checkpoint import load_policy

    safety = SafetyLayer(driver or make_driver(job.robot), SafetyConfig(**job.robot["safety"]))
    # A robot config may carry further daemon settings (``daemon: {inference: thread, ...}``,
    # or ``+robot.daemon.wait_for_chunk_s=2`` on the command line); inference runs in its own
    # process unless it says otherwise.
    extra = {"inference": "process", **dict(job.robot.get("daemon") or {})}
    daemon = RobotDaemon(
        safety,
        DaemonConfig(
            rate_hz=job.rate_hz,
            max_episode_steps=job.max_episode_steps,
            prefetch=job.prefetch,
            seed=job.seed,
            **extra,
        ),
        job.store,
        task_name=str(job.robot.get("task", job.robot["name"])),
        robot_name=str(job.robot["name"]),
    )
    if job.policy_path:
        daemon.load_policy(job.policy_path, load_policy)
    token = job.token or os.environ.get("ROBOT_RL_TOKEN") or None
    server = ControlServer(daemon, job.host, job.port, token, load_policy=load_policy)
    return daemon, server


def serve(job: ServeJob) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # The control thread must get the interpreter back quickly from the API and driver threads
    # (and from the inference thread where inference runs in this process).
    sys.setswitchinterval(0.0005)
    raise_process_priority()  # before any thread starts: they all inherit it
    import torch

    torch.set_num_threads(1)  # leave a core to the control loop and the robot's I/O
    daemon, server = build(job)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    daemon.start()
    server.start()
    print(f"{READY} {server.url}", flush=True)
    try:
        for i in range(job.episodes):
            if stop.is_set():
                break
            daemon.start_episode(seed=job.seed + i)
            while not daemon.wait_idle(0.2) and not stop.is_set():
                pass
        if not job.episodes:
            stop.wait()
    finally:
        server.close()
        daemon.shutdown()
    return {"episodes": daemon.episodes, "metrics": daemon.metrics.snapshot()}
