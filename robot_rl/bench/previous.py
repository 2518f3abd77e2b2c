"""Suites whose parts run at different times (a long learning part overnight, a timing part on
a quiet machine) merge the figures of parts not run now from an earlier JSON of the suite."""

from __future__ import annotations

import json
from pathlib import Path

MACHINE_KEYS = ("cores", "machine", "python", "bench_wall_s")


def merge_previous(figures: dict, path: str | Path) -> None:
    """Copies into ``figures`` every top-level key of ``path`` it lacks (not the machine's
    facts) and lists them under ``parts_from_previous``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"previous={path}: no such JSON of an earlier run of this suite")
    previous = json.loads(path.read_text())
    taken = []
    for key, value in previous.items():
        if key not in figures and key not in MACHINE_KEYS:
            figures[key] = value
            taken.append(key)
    figures["parts_from_previous"] = {"file": str(path), "keys": taken}
