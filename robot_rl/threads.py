"""Torch intra-op threads for small work on the CPU.

The package makes OpenMP threads wait passively (``OMP_WAIT_POLICY=PASSIVE``, set in
``robot_rl/__init__.py``): on a small shared CPU, spinning threads stalled a simulator and a
learner side by side by 10-100x. A sleeping thread, though, takes longer to wake than a small
operation takes to run, so small batches run faster on one thread than on two. Measured on the
2-core machine (quiet):

* best-of-N sampling of 32 chunks (5 DDIM steps): 24 ms on one thread, 44 ms on two; 128
  chunks: 64 vs 62 ms; 256: 151 vs 112 ms;
* a SAC update (twin LayerNorm critics): 128x128 at batch 128, 85 vs 34 updates/s; 256x256 at
  batch 256, 40 vs 23; 512x512x512 at batch 256, 11 vs 11; 1024x1024 at batch 1024, 1.6 vs 2.3.

:func:`few_threads` runs a block on one thread when its work is below such a size and leaves
torch's setting alone otherwise (and on a GPU, where it does not matter).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch

# Sampling: chunks per call up to which one thread is as fast as two or faster.
FEW_THREADS_BATCH = 128
# Learning: batch x widest layer up to which one thread updates as fast as two or faster.
FEW_THREADS_LEARNER_WORK = 256 * 512


@contextlib.contextmanager
def few_threads(
    work: int, threads: int | None = 1, limit: int = FEW_THREADS_BATCH
) -> Iterator[None]:
    """Run the block on ``threads`` intra-op threads (process-wide, restored after) when
    ``work <= limit``; otherwise, or with ``threads=None``, leave torch's setting."""
    if threads is None or work > limit:
        yield
        return
    previous = torch.get_num_threads()
    if previous == threads:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def learner_threads(batch_size: int, hidden_dims: Sequence[int], device: str = "cpu"):
    """:func:`few_threads` for one gradient update of MLPs of ``hidden_dims`` at ``batch_size``."""
    if torch.device(device).type != "cpu":
        return contextlib.nullcontext()
    width = max(hidden_dims, default=1)
    return few_threads(batch_size * width, 1, FEW_THREADS_LEARNER_WORK)
