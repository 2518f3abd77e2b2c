"""What travels to Ray actors through the object store: a checkpoint folder's files (workers on
other machines need no shared filesystem) and boxed references, which Ray passes through a call
unresolved, so the receiver fetches the value only when it needs it."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robot_rl.policies.checkpoint import load_policy


def checkpoint_files(path: str | Path) -> dict[str, bytes]:
    """Every file of a checkpoint folder, by relative path (what a remote worker rebuilds)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint folder {path} does not exist")
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def policy_from_files(files: dict[str, bytes], device: str = "cpu"):
    """:func:`load_policy` of a checkpoint folder shipped as :func:`checkpoint_files`."""
    with tempfile.TemporaryDirectory(prefix="robot_rl_policy_") as tmp:
        for name, data in files.items():
            target = Path(tmp) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return load_policy(tmp, device)


@dataclass
class Shipped:
    """A value in Ray's object store, passed by reference inside this box: Ray does not resolve
    a boxed reference before a call, so the receiver reads the value only when it needs it
    (restartable actors take no large arguments; a worker skips weights it already has). The
    sender keeps the value alive while it holds the box."""

    ref: Any

    @classmethod
    def of(cls, value: Any) -> Shipped:
        import ray

        return value if isinstance(value, cls) else cls(ray.put(value))

    def get(self) -> Any:
        import ray

        return ray.get(self.ref)


class ShippedCheckpoint(Shipped):
    """A checkpoint folder's files (:func:`checkpoint_files`) in Ray's object store."""

    def policy(self, device: str = "cpu"):
        return policy_from_files(self.get(), device)
