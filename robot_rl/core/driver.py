"""The driver protocol: how a robot environment talks to hardware (or to a simulator that
behaves like hardware). The safety layer sits between the robot environment and the driver."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

TIMESTAMP = "timestamp"


@runtime_checkable
class Driver(Protocol):
    """A robot's low-level interface.

    ``read()`` returns the latest observation ``{"state": [D], "image.<cam>": [H, W, 3], ...}``
    plus ``"timestamp"`` (seconds, monotonic clock, when the sensors were sampled).
    ``write(action)`` sends a normalised action ``[A]`` and returns the action that was really
    sent to the motors (after the driver's own limits).
    """

    def connect(self) -> None: ...

    def read(self) -> dict[str, np.ndarray]: ...

    def write(self, action: np.ndarray) -> np.ndarray: ...

    def disconnect(self) -> None: ...

    @property
    def is_connected(self) -> bool: ...
