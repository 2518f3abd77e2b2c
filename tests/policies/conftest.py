"""Policy tests run torch on one intra-op thread.

On a shared 2-core machine, OpenMP's spinning barriers stall for whole scheduler slices when
another process holds the second core (measured: seconds per call at batch 10); one thread
keeps this folder's run time independent of what else the machine is doing.
"""

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
