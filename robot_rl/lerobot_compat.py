"""Import LeRobot where torchvision's compiled ops do not load.

LeRobot imports torchvision. On a machine whose torchvision wheel was built against CUDA but
runs a CPU torch (this project's pin pair, torch 2.13.0 + torchvision 0.28.0), ``import
torchvision`` fails with ``RuntimeError: operator torchvision::nms does not exist`` while
registering fake kernels for ops whose schemas live in the missing CUDA library. Defining those
two schemas first lets it import: transforms work, the compiled ops and ``torchvision.io`` do
not (nothing here needs them). On a machine with a matching pair the import works and this
module changes nothing: the workaround switches itself on only on that exact failure.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any

_MISSING_OP = "operator torchvision::nms does not exist"
_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_fragment: Any = None  # the torch.library fragment must outlive the import: keep a reference

LEROBOT_INSTALL = (
    "pip install --no-deps lerobot==0.4.4 -c requirements/constraints.txt, plus its runtime "
    "needs (scripts/setup.sh installs both)"
)


def import_torchvision() -> ModuleType:
    """``import torchvision``, defining the missing op schemas if (and only if) that fails."""
    global _fragment
    try:
        return importlib.import_module("torchvision")
    except RuntimeError as err:
        if _MISSING_OP not in str(err):
            raise
    import torch

    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]  # drop the half-imported package before trying again
    _fragment = torch.library.Library("torchvision", "FRAGMENT")
    for schema in _SCHEMAS:
        _fragment.define(schema)
    return importlib.import_module("torchvision")


def import_lerobot_datasets() -> ModuleType:
    """``lerobot.datasets.lerobot_dataset``, or an ImportError naming the install command."""
    try:
        import_torchvision()
        return importlib.import_module("lerobot.datasets.lerobot_dataset")
    except ImportError as err:
        raise ImportError(
            f"LeRobot datasets need lerobot ({err}); install it: {LEROBOT_INSTALL}"
        ) from err
