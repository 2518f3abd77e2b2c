"""robot_rl: improve imitation-pretrained robot policies with reinforcement learning.

The core library. It never imports the outer packages (``sim``, ``real``, ``world_models``);
configs wire them in by dotted path.
"""

import os

# Torch's OpenMP threads busy-wait by default; on a small shared CPU (2 cores, a simulator and a
# learner side by side) that stalls training and inference by 10-100x. Passive waiting costs
# nothing measurable when the machine is idle. Only effective if set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
