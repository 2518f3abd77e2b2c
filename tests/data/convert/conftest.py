"""Fixtures for the conversion tests: small datasets written by each format's own tools."""

from __future__ import annotations

from pathlib import Path

import pytest

from robot_rl.data.convert import ConvertOptions
from robot_rl.data.convert.samples import write_robomimic_sample, write_store_sample


@pytest.fixture
def quiet() -> ConvertOptions:
    return ConvertOptions(progress=False)


@pytest.fixture
def store_sample(tmp_path: Path) -> Path:
    path = tmp_path / "sample.zarr"
    write_store_sample(path)
    return path


@pytest.fixture
def robomimic_sample(tmp_path: Path) -> tuple[Path, list]:
    path = tmp_path / "sample.hdf5"
    return path, write_robomimic_sample(path)
