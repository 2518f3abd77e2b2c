"""Policy checkpoints: one folder, three files, nothing unpickled.

::

    <checkpoint>/
        config.json              {"format_version": 1, "policy_class": "DiffusionPolicy",
                                  "config": {<every field of the policy's config dataclass>}}
        model.safetensors        the policy's state_dict (EMA weights after pretraining)
        normalizer.safetensors   "<key>.center" / "<key>.scale" tensors, modes in the header

Writes go to a hidden ``.<name>.<random>.partial`` folder beside the target, which is renamed
into place when complete, so a crash never leaves a half checkpoint under the real name.
Every loading error names the file and what to do about it.

``config.json`` names the class; classes are found in a registry filled by ``@register_policy``,
so a new policy is one class plus that decorator. The class provides ``config_class`` (its
:class:`~robot_rl.policies.config.PolicyConfig` dataclass), a constructor
``cls(config, normalizer)`` and, as an ``nn.Module``, ``state_dict``/``load_state_dict``.
"""

from __future__ import annotations

import importlib
import json
import os
import secrets
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any, TypeVar

import safetensors
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from robot_rl.core.policy import ChunkPolicy
from robot_rl.policies.normalize import Normalizer
from robot_rl.policies.tensors import check_normalizer

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
NORMALIZER_FILE = "normalizer.safetensors"
CONFIG_KEYS = ("format_version", "policy_class", "config")

_POLICIES: dict[str, type] = {}
P = TypeVar("P", bound=type)


def register_policy(cls: P) -> P:
    """Class decorator: make ``cls`` loadable by ``load_policy`` under ``cls.__name__``."""
    if not (issubclass(cls, ChunkPolicy) and issubclass(cls, nn.Module)):
        raise TypeError(f"{cls.__name__} must subclass both ChunkPolicy and torch.nn.Module")
    if not hasattr(cls, "config_class"):
        raise TypeError(f"{cls.__name__} needs a `config_class` attribute (its config dataclass)")
    name = cls.__name__
    if name in _POLICIES and _POLICIES[name] is not cls:
        raise ValueError(
            f"a different policy class is already registered as {name!r} "
            f"({_POLICIES[name].__module__}); give the new class another name"
        )
    _POLICIES[name] = cls
    return cls


def policy_class(name: str) -> type:
    """The registered class called ``name``; KeyError listing the known names otherwise."""
    # The built-in policies register themselves when their modules are imported; importing the
    # package here (not at the top) avoids a cycle, since those modules import this one.
    import robot_rl.policies  # noqa: F401

    if name not in _POLICIES:
        raise KeyError(
            f"unknown policy class {name!r}; registered: {sorted(_POLICIES)}. If it is defined "
            "outside robot_rl.policies, import its module (which applies @register_policy) first"
        )
    return _POLICIES[name]


def registered_policies() -> dict[str, type]:
    """A copy of the registry: ``{class name: class}``."""
    return dict(_POLICIES)


def save_policy(policy: nn.Module, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``policy`` (a registered policy class) as a checkpoint folder at ``path``.

    Returns the folder. Raises FileExistsError if it exists, unless ``overwrite``.
    """
    path = Path(path)
    name = type(policy).__name__
    if policy_class(name) is not type(policy):
        raise TypeError(f"{name} is not the registered class of that name; register it first")
    if path.exists() and not overwrite:
        raise FileExistsError(f"checkpoint folder {path} exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    # os.mkdir (not mkdtemp, which makes 0700 folders) so the checkpoint gets the usual
    # permissions and a robot daemon running as another user can read it.
    partial = path.parent / f".{path.name}.{secrets.token_hex(4)}.partial"
    partial.mkdir()
    try:
        header = {
            "format_version": FORMAT_VERSION,
            "policy_class": name,
            "config": policy.config.to_dict(),
        }
        (partial / CONFIG_FILE).write_text(json.dumps(header, indent=2, sort_keys=True) + "\n")
        weights = {k: v.detach().cpu().contiguous() for k, v in policy.state_dict().items()}
        save_file(
            weights,
            partial / MODEL_FILE,
            metadata={"format_version": str(FORMAT_VERSION), "policy_class": name},
        )
        normalizer: Normalizer = policy.normalizer
        save_file(
            normalizer.state_dict(), partial / NORMALIZER_FILE, metadata=normalizer.metadata()
        )
        # safetensors creates its files 0600; give them the mode Python gave config.json.
        mode = stat.S_IMODE((partial / CONFIG_FILE).stat().st_mode)
        for name in (MODEL_FILE, NORMALIZER_FILE):
            (partial / name).chmod(mode)
        _fsync_folder(partial)
        _replace_folder(partial, path)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)  # leave nothing half-written behind
        raise
    return path


def load_policy(path: str | os.PathLike, device: str = "cpu") -> nn.Module:
    """Rebuild the policy saved at ``path`` on ``device`` (in eval mode). Never unpickles."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(
            f"checkpoint folder {path} does not exist (or is not a folder); "
            "write one with robot_rl.policies.save_policy(policy, path)"
        )
    composite = _load_composite(path, device)
    if composite is not None:
        return composite
    cls, fields = _read_config(path / CONFIG_FILE)
    try:
        config = cls.config_class.from_dict({**fields, "device": device})
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path / CONFIG_FILE}: invalid config: {error}") from error
    normalizer = _read_normalizer(path / NORMALIZER_FILE)
    try:
        check_normalizer(normalizer, config)
    except KeyError as error:
        raise KeyError(f"{path / NORMALIZER_FILE}: {error.args[0]}") from error
    policy = cls(config, normalizer)
    _load_weights(policy, path / MODEL_FILE)
    return policy.eval()


# Policies built from other checkpoints (a steered policy references its base by path) have
# their own loader, named by dotted path so that this module imports none of them.
COMPOSITE_LOADERS = {
    "SteeredPolicy": "robot_rl.improvers.steered.load_steered",
    "BestOfNPolicy": "robot_rl.offline.policies.load_offline_policy",
    "ExpoPolicy": "robot_rl.offline.policies.load_offline_policy",
}


def _load_composite(path: Path, device: str):
    file = path / CONFIG_FILE
    try:
        header = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None  # _read_config reports the problem with the file
    name = header.get("policy_class") if isinstance(header, dict) else None
    if name not in COMPOSITE_LOADERS:
        return None
    module, _, func = COMPOSITE_LOADERS[name].rpartition(".")
    return getattr(importlib.import_module(module), func)(path, header.get("config", {}), device)


def _read_config(file: Path) -> tuple[type, dict[str, Any]]:
    if not file.is_file():
        raise FileNotFoundError(
            f"{file} is missing: not a robot_rl policy checkpoint, or its "
            "write was interrupted; save the policy again"
        )
    try:
        header = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{file} is not valid JSON ({error}); restore it or save again") from error
    if not isinstance(header, dict) or set(header) != set(CONFIG_KEYS):
        got = sorted(header) if isinstance(header, dict) else type(header).__name__
        raise ValueError(f"{file} must hold exactly the keys {list(CONFIG_KEYS)}, got {got}")
    version = header["format_version"]
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{file} has format_version {version!r}; this robot_rl reads version "
            f"{FORMAT_VERSION}: load it with the robot_rl that wrote it"
        )
    try:
        cls = policy_class(header["policy_class"])
    except KeyError as error:
        raise KeyError(f"{file}: {error.args[0]}") from error
    if not isinstance(header["config"], dict):
        raise ValueError(f"{file}: 'config' must be an object of config fields")
    return cls, header["config"]


def _read_normalizer(file: Path) -> Normalizer:
    if not file.is_file():
        raise FileNotFoundError(
            f"{file} is missing: the normalisation statistics are needed to "
            "use the weights; save the policy again with its normaliser"
        )
    try:
        with safetensors.safe_open(file, framework="pt") as handle:
            metadata = handle.metadata()
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        return Normalizer.from_state_dict(tensors, metadata)
    except (safetensors.SafetensorError, ValueError, OSError) as error:
        raise ValueError(f"{file} is unreadable or malformed: {error}") from error


def _load_weights(policy: nn.Module, file: Path) -> None:
    if not file.is_file():
        raise FileNotFoundError(f"{file} is missing: the checkpoint has no weights; save again")
    try:
        weights = load_file(file, device="cpu")
    except (safetensors.SafetensorError, OSError) as error:
        raise ValueError(f"{file} is unreadable or malformed: {error}") from error
    expected = policy.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    wrong = [
        f"{k}: file {tuple(weights[k].shape)} vs config {tuple(expected[k].shape)}"
        for k in sorted(set(weights) & set(expected))
        if weights[k].shape != expected[k].shape
    ]
    if missing or unexpected or wrong:
        raise ValueError(
            f"{file} does not match the policy built from {CONFIG_FILE}: missing tensors "
            f"{missing}, unexpected tensors {unexpected}, shape mismatches {wrong}. The weights "
            "and config.json come from different policies; use the folder as saved"
        )
    with torch.no_grad():
        policy.load_state_dict(weights, strict=True)


def _fsync_folder(folder: Path) -> None:
    """Flush the files and the folder entry, so the rename publishes complete data."""
    for file in folder.iterdir():
        with open(file, "rb") as handle:
            os.fsync(handle.fileno())
    if hasattr(os, "O_DIRECTORY"):  # POSIX; Windows cannot open folders
        descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _replace_folder(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target``; an existing ``target`` is moved aside first and removed
    after, so at every instant either the old or the new complete checkpoint exists on disk."""
    if not target.exists():
        os.replace(source, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
    os.replace(target, old / target.name)
    os.replace(source, target)
    shutil.rmtree(old, ignore_errors=True)
