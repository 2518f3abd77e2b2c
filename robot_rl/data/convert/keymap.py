"""Which source keys become which store keys, with sensible defaults per source format.

A reader describes its per-step source keys (dtype, per-frame shape, image or not); a
:class:`KeyMap` from the config says what to take, and :func:`resolve` turns the two into a
fixed :class:`ResolvedKeys` once per conversion. Every episode is then mapped by
:func:`map_episode` into the store's contract::

    state         float32 [T, D]      source keys concatenated in order (each flattened)
    image.<cam>   uint8   [T, H, W, 3]
    action        float32 [T, A]      optionally rescaled per dimension to [-1, 1]
    reward        float32 [T]         terminated, is_success: bool [T]
    <other>       as the source has it, under the source key's last path component

Defaults per format (a key is used when the source has it):

    format            state                       action   reward       terminated  is_success
    lerobot           observation.state           action   next.reward  next.done   next.success
    robomimic         every low-dim obs/<key>     actions  rewards      dones       is_success
    diffusion_policy  state, else every low-dim   action   reward       done(s)     success
    store             state                       action   reward       terminated  is_success
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from robot_rl.core import keys as K
from robot_rl.data.convert.options import ConvertError, KeyMap


@dataclass(frozen=True)
class SourceKey:
    """A per-step source key: dtype and per-frame shape, and whether it holds camera frames."""

    dtype: str
    shape: tuple[int, ...]
    image: bool = False

    @property
    def low_dim(self) -> bool:
        return not self.image and len(self.shape) <= 1


@dataclass(frozen=True)
class FormatDefaults:
    """Candidate source keys per store key; the first one present is used."""

    state: tuple[str, ...]
    action: tuple[str, ...]
    reward: tuple[str, ...]
    terminated: tuple[str, ...]
    is_success: tuple[str, ...]
    timestamp: tuple[str, ...] = ("timestamp",)
    obs_prefix: str = ""
    """low-dim keys under this prefix form the state when no ``state`` candidate exists"""
    ignore: tuple[str, ...] = ()
    """bookkeeping keys that are never converted (e.g. LeRobot's frame_index)"""
    extra: tuple[tuple[str, str], ...] = ()
    """source key -> store key renames applied by default"""


DEFAULTS: dict[str, FormatDefaults] = {
    "lerobot": FormatDefaults(
        state=("observation.state",),
        action=("action",),
        reward=("next.reward",),
        terminated=("next.done",),
        is_success=("next.success",),
        ignore=("index", "frame_index", "episode_index", "task_index"),
    ),
    "robomimic": FormatDefaults(
        state=(),
        action=("actions",),
        reward=("rewards",),
        terminated=("dones",),
        is_success=("robot_rl/is_success",),
        timestamp=("robot_rl/timestamp",),
        obs_prefix="obs/",
        extra=(("states", "sim_state"),),
    ),
    "diffusion_policy": FormatDefaults(
        state=("state",),
        action=("action",),
        reward=("reward", "rewards"),
        terminated=("done", "dones", "terminal", "terminals"),
        is_success=("success", "is_success"),
    ),
    "store": FormatDefaults(
        state=(K.STATE,),
        action=(K.ACTION,),
        reward=(K.REWARD,),
        terminated=(K.TERMINATED,),
        is_success=(K.IS_SUCCESS,),
    ),
}
_SCALAR_KEYS = {K.REWARD: "float32", K.TERMINATED: "bool", K.IS_SUCCESS: "bool"}
_CAMERA_PREFIXES = ("observation.images.", "observation.", "obs/", K.IMAGE_PREFIX)


@dataclass(frozen=True)
class ResolvedKeys:
    """The mapping of one conversion: ``state`` parts and ``store key <- source key`` pairs."""

    state: tuple[tuple[str, int], ...]
    """(source key, flattened width) concatenated into ``state``"""
    fields: tuple[tuple[str, str], ...]
    """(store key, source key) for every other stored key"""

    @property
    def source_keys(self) -> list[str]:
        return [key for key, _ in self.state] + [src for _, src in self.fields]

    @property
    def store_keys(self) -> list[str]:
        return sorted(([K.STATE] if self.state else []) + [dst for dst, _ in self.fields])

    def to_json(self) -> dict[str, Any]:
        return {"state": [list(part) for part in self.state], "fields": dict(self.fields)}


def camera_name(source_key: str) -> str:
    """``observation.images.front`` -> ``front``, ``agentview_image`` -> ``agentview``."""
    name = source_key
    for prefix in _CAMERA_PREFIXES:
        if name.startswith(prefix) and len(name) > len(prefix):
            name = name[len(prefix) :]
            break
    name = name.rsplit("/", 1)[-1]
    return name[: -len("_image")] if name.endswith("_image") and len(name) > 6 else name


def store_name(source_key: str) -> str:
    """Store key of an unmapped source key: its last path component (``obs/x`` -> ``x``)."""
    return source_key.rsplit("/", 1)[-1]


def resolve(keymap: KeyMap, specs: Mapping[str, SourceKey], fmt: str, where: str) -> ResolvedKeys:
    """Fix the mapping for a source with per-step keys ``specs``; raises naming what exists."""
    defaults = DEFAULTS[fmt]
    available = sorted(specs)

    def find(name: str, what: str) -> str:
        for candidate in (name, f"{defaults.obs_prefix}{name}"):
            if candidate in specs:
                return candidate
        raise ConvertError(
            f"{where}: keys.{what} names {name!r}, which the source does not have; "
            f"source keys: {available}"
        )

    def pick(explicit: str | None, candidates: tuple[str, ...], what: str) -> str | None:
        if explicit is not None:
            return find(explicit, what) if explicit else None  # "" turns a default off
        return next((c for c in candidates if c in specs), None)

    fields: dict[str, str] = {}
    for store_key, explicit, candidates in (
        (K.ACTION, keymap.action, defaults.action),
        (K.REWARD, keymap.reward, defaults.reward),
        (K.TERMINATED, keymap.terminated, defaults.terminated),
        (K.IS_SUCCESS, keymap.is_success, defaults.is_success),
        ("timestamp", keymap.timestamp, defaults.timestamp),
    ):
        source = pick(explicit, candidates, store_key)
        if source is not None:
            fields[store_key] = source
    if K.ACTION not in fields:
        raise ConvertError(
            f"{where}: no action key found (looked for {list(defaults.action)}); name it with "
            f"keys.action=<key>; source keys: {available}"
        )
    if keymap.cameras is None:
        cameras = {key: camera_name(key) for key, spec in specs.items() if spec.image}
    else:
        cameras = {find(key, "cameras"): name for key, name in keymap.cameras.items()}
    for source, name in cameras.items():
        fields[K.image_key(name)] = source
    state_keys = _state_keys(keymap, specs, defaults, find)
    for source, store_key in defaults.extra:
        if source in specs:
            fields[store_key] = source
    for source, store_key in keymap.extra.items():
        fields[store_key] = find(source, "extra")
    taken = set(fields.values()) | set(state_keys)
    if keymap.keep_unmapped:
        for source in available:
            skipped = source in taken or source in defaults.ignore or specs[source].image
            if not skipped:
                fields.setdefault(store_name(source), source)
    state = tuple((key, int(np.prod(specs[key].shape, dtype=np.int64))) for key in state_keys)
    _check_names(fields, state, where)
    return ResolvedKeys(state=state, fields=tuple(sorted(fields.items())))


def _state_keys(
    keymap: KeyMap,
    specs: Mapping[str, SourceKey],
    defaults: FormatDefaults,
    find: Callable[[str, str], str],
) -> list[str]:
    if keymap.state is not None:
        keys = [find(key, "state") for key in keymap.state]
        for key in keys:
            if specs[key].image:
                raise ConvertError(f"keys.state names {key!r}, which holds camera frames")
        return keys
    present = [c for c in defaults.state if c in specs]
    if present:
        return present[:1]
    ignored = {*defaults.action, *defaults.reward, *defaults.terminated, *defaults.is_success}
    ignored |= {*defaults.timestamp, *defaults.ignore, *(src for src, _ in defaults.extra)}
    return sorted(
        key
        for key, spec in specs.items()
        if spec.low_dim and key.startswith(defaults.obs_prefix) and key not in ignored
    )


def _check_names(fields: Mapping[str, str], state: tuple[tuple[str, int], ...], where: str) -> None:
    if K.STATE in fields and state:
        raise ConvertError(
            f"{where}: source key {fields[K.STATE]!r} would be stored as 'state', which the "
            "state keys already form; rename it with keys.extra or set keys.keep_unmapped=false"
        )
    sources = [source for _, source in fields.items()]
    if len(set(sources)) != len(sources):
        dup = sorted({s for s in sources if sources.count(s) > 1})
        raise ConvertError(f"{where}: source keys {dup} are mapped to two store keys; map once")


def map_episode(
    resolved: ResolvedKeys,
    raw: Mapping[str, np.ndarray],
    action_bounds: tuple[np.ndarray, np.ndarray] | None,
    where: str,
) -> dict[str, np.ndarray]:
    """One source episode ``{source key: [T, ...]}`` -> ``{store key: [T, ...]}``."""
    episode: dict[str, np.ndarray] = {}
    if resolved.state:
        parts = [_frames(raw, key, where).reshape(len(raw[key]), -1) for key, _ in resolved.state]
        lengths = {key: len(part) for (key, _), part in zip(resolved.state, parts, strict=True)}
        if len(set(lengths.values())) != 1:
            raise ConvertError(
                f"{where}: the state keys have different numbers of frames {lengths}; the "
                "source is inconsistent: fix or drop this episode"
            )
        episode[K.STATE] = np.concatenate(parts, axis=1).astype(np.float32, copy=False)
    for store_key, source in resolved.fields:
        value = _frames(raw, source, where)
        if store_key in _SCALAR_KEYS:
            value = _scalar(value, store_key, source, where)
        elif store_key == K.ACTION:
            value = value.reshape(len(value), -1)
            if value.dtype.kind == "f":
                value = value.astype(np.float32, copy=False)
            if action_bounds is not None:
                value = normalise_actions(value, *action_bounds)
        elif K.is_image_key(store_key):
            value = _image(value, source, where)
        episode[store_key] = value
    return episode


def _frames(raw: Mapping[str, np.ndarray], key: str, where: str) -> np.ndarray:
    if key not in raw:
        raise ConvertError(f"{where}: key {key!r} is missing in this episode; keys: {sorted(raw)}")
    return np.asarray(raw[key])


def _scalar(value: np.ndarray, store_key: str, source: str, where: str) -> np.ndarray:
    if value.ndim > 1 and int(np.prod(value.shape[1:])) == 1:
        value = value.reshape(len(value))
    if value.ndim != 1:
        raise ConvertError(
            f"{where}: {source!r} has shape {value.shape}; {store_key} needs one value per "
            f"step [T]; map another key with keys.{store_key}=<key> (or '' to skip it)"
        )
    if _SCALAR_KEYS[store_key] == "bool":
        return value != 0
    return value.astype(np.float32)


def _image(value: np.ndarray, source: str, where: str) -> np.ndarray:
    if value.ndim != 4 or value.shape[-1] != 3:
        raise ConvertError(
            f"{where}: camera {source!r} has shape {value.shape}, cameras are [T, H, W, 3]; "
            "leave it out of keys.cameras to keep it under its own name"
        )
    if value.dtype == np.uint8:
        return value
    if value.dtype.kind in "iuf" and np.all((value >= 0) & (value <= 255) & (value == value // 1)):
        return value.astype(np.uint8)  # e.g. diffusion_policy's float32 0..255 frames
    raise ConvertError(
        f"{where}: camera {source!r} is {value.dtype} with values outside the integers 0..255; "
        "convert it to uint8 first, or leave it out of keys.cameras to keep it as it is"
    )


def normalise_actions(action: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Rescale ``[T, A]`` from ``[low, high]`` to ``[-1, 1]`` per dimension (constant dims: 0)."""
    span = np.where(high > low, high - low, 1.0)
    scaled = 2.0 * (action - low) / span - 1.0
    return np.where(high > low, scaled, 0.0).astype(np.float32)
