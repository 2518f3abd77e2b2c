"""Per-key normalisation of observations and actions, kept outside the model.

The normaliser is fitted on the dataset's statistics, saved next to the weights
(``normalizer.safetensors``) and applied around the model, so a checkpoint carries everything
that turns raw observations into model inputs and model outputs back into actions.

Every low-dimensional key is an affine map ``x_n = (x - center) / scale`` per dimension:

- ``"limits"``: ``center = (max + min) / 2``, ``scale = (max - min) / 2``, so [min, max] -> [-1, 1];
- ``"gaussian"``: ``center = mean``, ``scale = std``.

A dimension whose scale is (almost) zero is constant in the data: it maps to 0 and comes back
as its constant value, with no division by zero. Image keys (``"image.<cam>"``) need no
statistics: uint8 [0, 255] -> float [0, 1]; the image encoder does the rest.

Unlike LeRobot, a key without statistics is an error, never silently passed through.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
import torch

from robot_rl.core.keys import is_image_key

NORM_MODES = ("limits", "gaussian")
# Ranges below this are treated as constant dimensions (float32 noise on constant data).
MIN_SCALE = 1e-6
_STATS_FOR_MODE = {"limits": ("min", "max"), "gaussian": ("mean", "std")}


class Normalizer:
    """Affine per-key normalisation; see the module docstring.

    Build it with :meth:`from_stats`; ``normalize``/``unnormalize`` take and return dicts of
    tensors of any leading shape ``[..., *key_shape]`` (numpy arrays are accepted and converted).
    """

    def __init__(
        self,
        center: Mapping[str, torch.Tensor],
        scale: Mapping[str, torch.Tensor],
        modes: Mapping[str, str] | None = None,
    ) -> None:
        if set(center) != set(scale):
            raise ValueError(f"center keys {sorted(center)} differ from scale keys {sorted(scale)}")
        for key in center:
            if center[key].shape != scale[key].shape:
                raise ValueError(
                    f"normaliser key {key!r}: center shape {tuple(center[key].shape)} differs "
                    f"from scale shape {tuple(scale[key].shape)}"
                )
        self.center = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in center.items()}
        self.scale = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in scale.items()}
        # Constant dimensions: multiply by 0 instead of dividing by ~0.
        self.inv_scale = {
            k: torch.where(s.abs() > MIN_SCALE, 1.0 / s.clamp_min(MIN_SCALE), torch.zeros_like(s))
            for k, s in self.scale.items()
        }
        self.modes = dict(modes or {k: "affine" for k in center})

    @classmethod
    def from_stats(
        cls, stats: Mapping[str, Mapping[str, np.ndarray]], modes: Mapping[str, str]
    ) -> Normalizer:
        """stats ``{key: {"min", "max", "mean", "std": array [D]}}`` -> normaliser.

        ``modes`` ``{key: "limits" | "gaussian"}`` picks the keys to build; each needs the
        statistics of its mode (images need none and are never listed).
        """
        center, scale = {}, {}
        for key, mode in modes.items():
            if mode not in NORM_MODES:
                raise ValueError(
                    f"normalisation mode {mode!r} for {key!r}: expected one of {NORM_MODES}"
                )
            if key not in stats:
                raise KeyError(
                    f"no statistics for {key!r} (have {sorted(stats)}); compute them over the "
                    f"dataset (min/max/mean/std per dimension) and pass stats[{key!r}]"
                )
            needed = _STATS_FOR_MODE[mode]
            missing = [name for name in needed if name not in stats[key]]
            if missing:
                raise KeyError(
                    f"statistics of {key!r} lack {missing} needed by mode {mode!r}; "
                    f"have {sorted(stats[key])}"
                )
            a, b = (np.asarray(stats[key][name], dtype=np.float64) for name in needed)
            if mode == "limits":
                center[key], scale[key] = (b + a) / 2.0, (b - a) / 2.0
            else:
                center[key], scale[key] = a, b
            if not (np.all(np.isfinite(center[key])) and np.all(np.isfinite(scale[key]))):
                raise ValueError(f"statistics of {key!r} contain NaN or inf: {dict(stats[key])}")
            if np.any(scale[key] < 0):
                raise ValueError(
                    f"statistics of {key!r} have max < min or std < 0: {dict(stats[key])}"
                )
        return cls(
            {k: torch.from_numpy(v.astype(np.float32)) for k, v in center.items()},
            {k: torch.from_numpy(v.astype(np.float32)) for k, v in scale.items()},
            modes,
        )

    def to(self, device: torch.device | str) -> Normalizer:
        """Move the statistics (in place) to ``device``; returns self."""
        for table in (self.center, self.scale, self.inv_scale):
            for key, value in table.items():
                table[key] = value.to(device)
        return self

    def _check_key(self, key: str) -> None:
        if key not in self.center:
            raise KeyError(
                f"the normaliser has no statistics for {key!r} (it has {sorted(self.center)}); "
                f"rebuild it with Normalizer.from_stats(stats, modes) including {key!r}"
            )

    def normalize(self, data: Mapping[str, torch.Tensor | np.ndarray]) -> dict[str, torch.Tensor]:
        """Raw ``{key: [..., *shape]}`` -> normalised float tensors; images -> float [0, 1]."""
        out = {}
        for key, value in data.items():
            x = torch.as_tensor(value)
            if is_image_key(key):
                out[key] = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
                continue
            self._check_key(key)
            center = self.center[key]
            out[key] = (x.to(center.dtype) - center) * self.inv_scale[key]
        return out

    def unnormalize(self, data: Mapping[str, torch.Tensor | np.ndarray]) -> dict[str, torch.Tensor]:
        """Normalised ``{key: [..., *shape]}`` -> raw values (constant dims get their constant)."""
        out = {}
        for key, value in data.items():
            self._check_key(key)
            x = torch.as_tensor(value).to(self.center[key].dtype)
            out[key] = x * self.scale[key] + self.center[key]
        return out

    def keys(self) -> list[str]:
        return sorted(self.center)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Flat tensors for safetensors: ``"<key>.center"`` and ``"<key>.scale"``."""
        tensors = {}
        for key in self.center:
            tensors[f"{key}.center"] = self.center[key].detach().cpu().contiguous()
            tensors[f"{key}.scale"] = self.scale[key].detach().cpu().contiguous()
        return tensors

    def metadata(self) -> dict[str, str]:
        """String metadata for the safetensors header (the modes, for humans and repr)."""
        return {"modes": json.dumps(self.modes, sort_keys=True)}

    @classmethod
    def from_state_dict(
        cls, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
    ) -> Normalizer:
        """Inverse of :meth:`state_dict` (+ :meth:`metadata`)."""
        center, scale = {}, {}
        for name, value in tensors.items():
            key, _, field = name.rpartition(".")
            if field == "center":
                center[key] = value
            elif field == "scale":
                scale[key] = value
            else:
                raise ValueError(
                    f"unexpected normaliser tensor {name!r}: expected '<key>.center' "
                    "or '<key>.scale'"
                )
        lonely = sorted(set(center) ^ set(scale))
        if lonely:
            raise ValueError(f"normaliser keys {lonely} have a center or a scale but not both")
        modes = json.loads(metadata["modes"]) if metadata and "modes" in metadata else None
        return cls(center, scale, modes)

    def __repr__(self) -> str:
        return f"Normalizer({self.modes})"
