"""Golden on-disk layout of the episode store: a format change must be a deliberate one.

If this fails because the layout changed on purpose, bump ``FORMAT_VERSION`` (and teach
``EpisodeStore.open`` to read the old format or say how to convert it), then regenerate the
golden file with ``python tests/data/test_store_layout.py`` and commit both.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from robot_rl.data import EpisodeStore

GOLDEN = Path(__file__).parent / "golden" / "store_layout.json"


def build_tiny_store(path: Path) -> None:
    with EpisodeStore.create(
        path, task="push", fps=10, source="expert", robot="sim_arm", extra={"seed": 0}
    ) as store:
        for length in (3, 2):
            store.append_episode(
                {
                    "state": np.zeros((length, 4), np.float32),
                    "image.front": np.zeros((length, 6, 5, 3), np.uint8),
                    "action": np.zeros((length, 2), np.float32),
                    "reward": np.zeros(length, np.float32),
                    "is_success": np.ones(length, bool),
                    "terminated": np.zeros(length, bool),
                }
            )


def describe(path: Path) -> dict[str, Any]:
    """The layout facts that readers depend on, from the zarr.json files on disk."""
    nodes: dict[str, Any] = {}
    for meta_file in sorted(path.rglob("zarr.json")):
        meta = json.loads(meta_file.read_text())
        name = str(meta_file.parent.relative_to(path).as_posix())
        node: dict[str, Any] = {"node_type": meta["node_type"]}
        attributes = meta.get("attributes", {})
        if meta["node_type"] == "group":
            node["attribute_keys"] = sorted(attributes)
            if name == "data":
                node["attributes"] = attributes  # the schema: keys with dtype and shape
        else:
            node.update(
                data_type=meta["data_type"],
                shape=meta["shape"],
                chunk_shape=meta["chunk_grid"]["configuration"]["chunk_shape"],
                chunk_key_encoding=meta["chunk_key_encoding"],
                fill_value=meta["fill_value"],
                codecs=meta["codecs"],
            )
        nodes[name] = node
    root_attrs = json.loads((path / "zarr.json").read_text())["attributes"]
    return {
        "format_version": root_attrs["format_version"],
        "root_files": sorted(p.name for p in path.iterdir() if p.is_file()),
        "nodes": nodes,
    }


def test_layout_matches_golden(tmp_path):
    build_tiny_store(tmp_path / "tiny.zarr")
    got = describe(tmp_path / "tiny.zarr")
    expected = json.loads(GOLDEN.read_text())
    assert got == expected, (
        "the episode store's on-disk layout changed; if on purpose, bump FORMAT_VERSION and "
        "regenerate tests/data/golden/store_layout.json (see this file's docstring)"
    )


def test_published_arrays_read_back_with_plain_zarr(tmp_path):
    """Other tools (diffusion_policy's ReplayBuffer, notebooks) read the store with zarr."""
    import zarr

    build_tiny_store(tmp_path / "tiny.zarr")
    root = zarr.open_group(tmp_path / "tiny.zarr", mode="r")
    np.testing.assert_array_equal(root["meta/episode_ends"][:], [3, 5])
    assert root["data/state"].shape == (5, 4)
    assert root["data/image.front"].dtype == np.uint8


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        build_tiny_store(Path(tmp) / "tiny.zarr")
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(describe(Path(tmp) / "tiny.zarr"), indent=1) + "\n")
    print(f"wrote {GOLDEN}", file=sys.stderr)
