"""Dataset conversion: LeRobot (v3), robomimic HDF5 and diffusion_policy zarr <-> the episode
store, streaming one episode at a time, resumable, with provenance; and dataset checks.

``convert(src, dst, ConvertOptions(...))`` and ``check_dataset(path, CheckOptions(...))`` are
what ``robot-rl convert`` and ``robot-rl dataset check`` run. h5py, LeRobot and matplotlib are
imported only when their format (or the plot) is used.
"""

from robot_rl.data.convert.check import check_dataset
from robot_rl.data.convert.options import (
    FORMATS,
    CheckOptions,
    ConvertError,
    ConvertOptions,
    KeyMap,
)
from robot_rl.data.convert.pipeline import convert

__all__ = [
    "FORMATS",
    "CheckOptions",
    "ConvertError",
    "ConvertOptions",
    "KeyMap",
    "check_dataset",
    "convert",
]
