"""robot_rl: improve imitation-pretrained robot policies with reinforcement learning.

The core library. It never imports the outer packages (``sim``, ``real``, ``world_models``);
configs wire them in by dotted path.
"""

__version__ = "0.1.0"
