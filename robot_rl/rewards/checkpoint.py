"""Reward model checkpoints: a folder with ``reward_model.json`` (kind, config, calibration,
report) and ``*.safetensors`` weights, written aside and renamed into place. Loading never
unpickles."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

from robot_rl.core.reward import RewardModel

META_FILE = "reward_model.json"
KINDS = {
    "success_classifier": "robot_rl.rewards.classifier.SuccessClassifier",
    "vlm_rm": "robot_rl.rewards.clip.ClipReward",
}
"""checkpoint kind -> dotted path of the class whose ``load(folder)`` reads it"""


def write_folder(path: str | Path, meta: dict[str, Any], write_weights) -> Path:
    """Writes ``meta`` and the weights (``write_weights(tmp_folder)``) into a temp sibling
    folder, then renames it to ``path`` (replacing an older checkpoint there)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.writing-{uuid.uuid4().hex[:8]}")
    try:
        tmp.mkdir()
        write_weights(tmp)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
        if path.exists():
            if not (path / META_FILE).is_file():
                raise FileExistsError(
                    f"{path} exists and is not a reward model checkpoint; choose another path"
                )
            shutil.rmtree(path)
        tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def read_meta(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    meta_file = path / META_FILE
    if not meta_file.is_file():
        raise FileNotFoundError(
            f"{path}: no reward model checkpoint here (no {META_FILE}); train one with "
            "robot-rl reward train ... or pass the folder a training run wrote"
        )
    meta = json.loads(meta_file.read_text())
    if meta.get("kind") not in KINDS:
        raise ValueError(f"{meta_file}: unknown kind {meta.get('kind')!r}; known: {list(KINDS)}")
    return meta


def load_reward_model(path: str | Path) -> RewardModel:
    """Any reward model checkpoint folder, by the kind recorded in it."""
    import importlib

    meta = read_meta(path)
    module, _, name = KINDS[meta["kind"]].rpartition(".")
    return getattr(importlib.import_module(module), name).load(path)
