"""Named keys of observations, infos and episode-store arrays.

Observations are ``dict[str, np.ndarray]``: ``"state"`` is float32 ``[D]``; each camera is
``"image.<name>"``, uint8 ``[H, W, 3]``. Vectorised environments add a leading batch dimension,
the observation-history wrapper a time dimension ``[To, ...]`` after it.
"""

STATE = "state"
IMAGE_PREFIX = "image."
# the share of the episode's step budget already used, float32 [1]: 0 at reset, 1 at the time
# limit (added by robot_rl.core.envs.EpisodeClock for learners that read it; never stored)
EPISODE_CLOCK = "episode_clock"

ACTION = "action"
REWARD = "reward"
IS_SUCCESS = "is_success"
TERMINATED = "terminated"
EPISODE_ENDS = "episode_ends"

# info keys
APPLIED_ACTION = "applied_action"
SAFETY_EVENTS = "safety_events"
CHUNK_STEPS = "chunk_steps"
CHUNK_REWARDS = "chunk_rewards"
FINAL_OBS = "final_obs"
FINAL_INFO = "final_info"


def image_key(camera: str) -> str:
    """The observation key of a camera: ``image_key("front") == "image.front"``."""
    return IMAGE_PREFIX + camera


def is_image_key(key: str) -> bool:
    return key.startswith(IMAGE_PREFIX)


def camera_name(key: str) -> str:
    if not is_image_key(key):
        raise KeyError(f"{key!r} is not an image key; image keys look like 'image.<camera>'")
    return key[len(IMAGE_PREFIX) :]
