"""``robot-rl convert SRC DST`` and ``robot-rl dataset check PATH``."""

from __future__ import annotations

from robot_rl.config import ConvertJob, DatasetJob
from robot_rl.data.convert import check_dataset, convert


def convert_job(job: ConvertJob) -> dict:
    """Convert ``job.src`` into ``job.dst``; returns the conversion summary."""
    return convert(job.src, job.dst, job)


def dataset_job(job: DatasetJob) -> dict:
    """Check ``job.path``; returns the summary (``ok`` False when it found errors)."""
    return check_dataset(job.path, job)
