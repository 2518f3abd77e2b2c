"""Episode data: the zarr episode store, its schema checks, and training samplers.

``EpisodeStore`` holds episodes on disk (crash-safe appends, one writer, many readers);
``WindowSampler`` draws (observation history, action chunk) windows for policy training;
``ChunkTransitionSampler`` draws chunk-level transitions for offline RL.
"""

from robot_rl.data.sampler import EpisodeSource, WindowSampler, load_episodes
from robot_rl.data.schema import FORMAT_VERSION, KeySpec, StoreError
from robot_rl.data.store import EpisodeStore
from robot_rl.data.transitions import ChunkTransitionSampler

__all__ = [
    "FORMAT_VERSION",
    "ChunkTransitionSampler",
    "EpisodeSource",
    "EpisodeStore",
    "KeySpec",
    "StoreError",
    "WindowSampler",
    "load_episodes",
]
