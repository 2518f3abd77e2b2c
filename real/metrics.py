"""The daemon's metrics: loop period and jitter, inference latency, safety events, episodes.

Exposed in the Prometheus text format (``GET /metrics``), the standard every monitoring stack
scrapes, and as a JSON snapshot with percentiles (``GET /status``).
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np

WINDOW = 20_000  # recent samples kept per series (about 11 minutes at 30 Hz)


class Metrics:
    """Thread-safe counters and recent-sample series."""

    def __init__(self, rate_hz: float):
        self.target_period_s = 1.0 / rate_hz
        self._lock = threading.Lock()
        self.periods: deque[float] = deque(maxlen=WINDOW)
        self._last_tick: float | None = None
        self.inference_s: deque[float] = deque(maxlen=WINDOW)
        self.counters: dict[str, int] = {
            "ticks": 0,
            "episode_steps": 0,
            "episodes_recorded": 0,
            "episodes_aborted": 0,
            "missed_deadlines": 0,
            "starved_ticks": 0,
            "stale_actions_dropped": 0,
            "chunks": 0,
        }
        self.safety_events: dict[str, int] = {}

    def tick(self, t: float) -> None:
        with self._lock:
            if self._last_tick is not None:
                self.periods.append(t - self._last_tick)
            self._last_tick = t
            self.counters["ticks"] += 1

    def break_series(self) -> None:
        """The loop paused on purpose (between episodes): the next tick starts a new series."""
        with self._lock:
            self._last_tick = None

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] = self.counters.get(name, 0) + n

    def safety(self, events: list[dict]) -> None:
        with self._lock:
            for e in events:
                self.safety_events[e["kind"]] = self.safety_events.get(e["kind"], 0) + 1

    def inference(self, seconds: float) -> None:
        with self._lock:
            self.inference_s.append(seconds)
            self.counters["chunks"] += 1

    def periods_s(self) -> np.ndarray:
        """Differences of consecutive tick starts within episodes (seconds)."""
        with self._lock:
            return np.asarray(self.periods, np.float64)

    def snapshot(self, slack: float = 0.5) -> dict:
        periods = self.periods_s()
        with self._lock:
            latency = np.asarray(self.inference_s, np.float64)
            out = {**self.counters, "safety_events": dict(self.safety_events)}
        out["target_period_ms"] = 1000 * self.target_period_s
        # Periods long enough that their tick must have missed its deadline (checked apart
        # from the loop's own deadline test, to find misses it failed to report).
        out["late_periods"] = int(np.sum(periods > (1 + slack) * self.target_period_s))
        out.update(_percentiles("period", periods))
        out["jitter_ms"] = (
            float(1000 * np.std(periods - self.target_period_s)) if len(periods) else None
        )
        out.update(_percentiles("inference", latency))
        return out

    def prometheus(self) -> str:
        """The Prometheus text exposition format (version 0.0.4)."""
        snap = self.snapshot()
        lines = []

        def gauge(name: str, help_: str, value, labels: str = "", kind: str = "gauge") -> None:
            if value is None:
                return
            if not any(line.startswith(f"# HELP robot_rl_{name} ") for line in lines):
                lines.append(f"# HELP robot_rl_{name} {help_}")
                lines.append(f"# TYPE robot_rl_{name} {kind}")
            lines.append(f"robot_rl_{name}{labels} {float(value):.6g}")

        for key in sorted(self.counters):
            gauge(f"{key}_total", f"count of {key.replace('_', ' ')}", snap[key], kind="counter")
        for kind, n in sorted(snap["safety_events"].items()):
            gauge(
                "safety_events_total", "safety events by kind", n, f'{{kind="{kind}"}}', "counter"
            )
        gauge("loop_period_target_seconds", "target control period", self.target_period_s)
        for q in ("p50", "p99"):
            ms = snap.get(f"period_{q}_ms")
            gauge("loop_period_seconds", "control loop period", ms and ms / 1000, _q(q))
            ms = snap.get(f"inference_{q}_ms")
            gauge("inference_latency_seconds", "chunk inference latency", ms and ms / 1000, _q(q))
        jitter = snap["jitter_ms"]
        gauge("loop_jitter_seconds", "std of period minus target", jitter and jitter / 1000)
        return "\n".join(lines) + "\n"


def _q(name: str) -> str:
    return f'{{quantile="0.{name[1:]}"}}'


def _percentiles(name: str, values: np.ndarray) -> dict:
    if not len(values):
        return {f"{name}_p50_ms": None, f"{name}_p99_ms": None, f"{name}_max_ms": None}
    ms = 1000 * values
    return {
        f"{name}_p50_ms": float(np.percentile(ms, 50)),
        f"{name}_p99_ms": float(np.percentile(ms, 99)),
        f"{name}_max_ms": float(ms.max()),
    }
