"""A client of the daemon's control API, used by the operator CLI and the on-robot learner."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from typing import Any


class DaemonClient:
    """``DaemonClient("http://127.0.0.1:8765", token=None)``; errors carry the API's message."""

    def __init__(self, url: str = "http://127.0.0.1:8765", token: str | None = None):
        self.url = url.rstrip("/")
        self.token = token or os.environ.get("ROBOT_RL_TOKEN") or None

    def call(self, method: str, path: str, body: dict | None = None, timeout: float = 30) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                text = reply.read().decode()
                kind = reply.headers.get("Content-Type", "")
        except urllib.error.HTTPError as err:
            detail = err.read().decode()
            try:
                detail = json.loads(detail).get("error", detail)
            except json.JSONDecodeError:
                pass
            raise RuntimeError(f"{method} {path}: HTTP {err.code}: {detail}") from err
        return json.loads(text) if kind.startswith("application/json") else text

    def status(self) -> dict:
        return self.call("GET", "/status")

    def metrics(self) -> str:
        return self.call("GET", "/metrics")

    def start_episode(self, seed: int | None = None) -> dict:
        return self.call("POST", "/episode/start", {"seed": seed})

    def stop_episode(self, success: bool | None = None) -> dict:
        return self.call("POST", "/episode/stop", {"success": success})

    def label(self, success: bool) -> dict:
        return self.call("POST", "/label", {"success": success})

    def estop(self) -> dict:
        return self.call("POST", "/estop")

    def clear_estop(self) -> dict:
        return self.call("POST", "/estop/clear")

    def load_policy(self, path: str) -> dict:
        return self.call("POST", "/policy", {"path": str(path)}, timeout=120)

    def intervention(self, on: bool | None = None, action: list[float] | None = None) -> dict:
        return self.call("POST", "/intervention", {"on": on, "action": action})

    def run_episode(self, seed: int | None = None, timeout: float = 600) -> dict:
        """Start an episode, wait for it to end, return its summary."""
        before = self.status()["episodes_recorded"]
        self.start_episode(seed)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status()
            if status["episodes_recorded"] > before and status["episode"] is None:
                return status["last_episode"]
            time.sleep(0.05)
        raise TimeoutError(f"episode did not end within {timeout} s")
