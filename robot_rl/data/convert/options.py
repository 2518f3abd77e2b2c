"""Settings of a conversion and of a dataset check: the schemas behind ``robot-rl convert`` and
``robot-rl dataset check`` (``configs/convert.yaml``, ``configs/dataset.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from robot_rl.data.schema import StoreError

FORMATS = ("store", "lerobot", "robomimic", "diffusion_policy")
"""Readable formats; the first three can also be written."""
WRITABLE = ("store", "lerobot", "robomimic")
ALIASES = {"hdf5": "robomimic", "zarr": "store", "replay_buffer": "diffusion_policy"}


class ConvertError(StoreError):
    """A dataset cannot be converted as asked; the message names the file, episode and fix."""


def format_name(name: str, writable: bool = False) -> str:
    """Canonical format name (``hdf5`` -> ``robomimic``), or ``auto``; raises on unknown."""
    name = ALIASES.get(name, name)
    allowed = WRITABLE if writable else FORMATS
    if name != "auto" and name not in allowed:
        raise ValueError(f"format {name!r} is not one of {['auto', *allowed]}")
    return name


@dataclass
class KeyMap:
    """Which source keys become ``state``, ``image.<cam>``, ``action``, ... (None: default)."""

    state: list[str] | None = None
    """source keys concatenated, in this order, into ``state`` (None: the format's default)"""
    cameras: dict[str, str] | None = None
    """source image key -> camera name, stored as ``image.<name>`` (None: every image key)"""
    action: str | None = None
    """source key of the action (None: the format's default)"""
    reward: str | None = None
    """source key of the per-step reward ('' : none)"""
    terminated: str | None = None
    """source key of the termination flag ('' : none)"""
    is_success: str | None = None
    """source key of the per-step success flag ('' : none)"""
    timestamp: str | None = None
    """source key of the per-step time in seconds ('' : none)"""
    extra: dict[str, str] = field(default_factory=dict)
    """further source keys -> store key"""
    keep_unmapped: bool = True
    """keep every other per-step source key under its own name (False: drop them)"""
    action_norm: str = "none"
    """'none', or 'minmax': rescale each action dimension from the dataset's range to [-1, 1]"""

    def __post_init__(self) -> None:
        if self.action_norm not in ("none", "minmax"):
            raise ValueError(f"keys.action_norm={self.action_norm!r}; use 'none' or 'minmax'")

    @property
    def is_default(self) -> bool:
        return self == KeyMap()


@dataclass
class ConvertOptions:
    """How ``robot-rl convert SRC DST`` reads, maps and writes."""

    from_format: str = "auto"
    """source format: auto (from the path), store, lerobot, robomimic (hdf5), diffusion_policy"""
    to_format: str = "auto"
    """destination format: auto (from the path), store, lerobot, robomimic"""
    keys: KeyMap = field(default_factory=KeyMap)
    """key mapping into the store"""
    task: str | None = None
    """task name recorded in the destination (None: from the source)"""
    robot: str | None = None
    """robot name recorded in the destination (None: from the source)"""
    fps: float | None = None
    """control rate in Hz (None: from the source; required where the source has none)"""
    overwrite: bool = False
    """replace an existing destination instead of resuming it"""
    max_episodes: int | None = None
    """convert only the first N episodes"""
    filter_key: str | None = None
    """robomimic: convert only the demos listed in mask/<filter_key> (e.g. train)"""
    videos: bool = False
    """lerobot output: encode cameras as mp4 (lossy) instead of PNG images (bit-exact)"""
    next_obs: bool = True
    """robomimic output: also write next_obs (obs shifted by one, the last repeated)"""
    repo_id: str | None = None
    """lerobot output: the dataset's repo id (None: robot_rl/<destination folder name>)"""
    progress: bool = True
    """show a progress bar with frames/s"""

    def __post_init__(self) -> None:
        self.from_format = format_name(self.from_format)
        self.to_format = format_name(self.to_format, writable=True)
        if self.max_episodes is not None and self.max_episodes < 1:
            raise ValueError(f"max_episodes={self.max_episodes}; give >= 1 or leave it unset")
        if self.fps is not None and self.fps <= 0:
            raise ValueError(f"fps={self.fps}; give the control rate in Hz, > 0")


@dataclass
class CheckOptions:
    """What ``robot-rl dataset check PATH`` checks and where it writes its report."""

    from_format: str = "auto"
    """format of PATH: auto, store, lerobot, robomimic, diffusion_policy"""
    keys: KeyMap = field(default_factory=KeyMap)
    """key mapping for a non-store PATH"""
    fps: float | None = None
    """control rate in Hz for a source that does not record it"""
    out: str | None = None
    """report folder for summary.json and distributions.png (None: reports/dataset/<name>)"""
    timestamp_tolerance_s: float = 1e-3
    """largest allowed deviation of a timestamp step from 1/fps"""
    action_limit: float = 1.0
    """actions are expected in [-limit, limit] (the normalised-action contract)"""
    filter_key: str | None = None
    """robomimic: check only the demos listed in mask/<filter_key>"""
    progress: bool = True
    """show a progress bar"""

    def __post_init__(self) -> None:
        self.from_format = format_name(self.from_format)
        if self.timestamp_tolerance_s < 0 or self.action_limit <= 0:
            raise ValueError("timestamp_tolerance_s must be >= 0 and action_limit > 0")
