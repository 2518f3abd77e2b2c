"""robot_rl's own MuJoCo tasks (MJCF in ``sim/assets``) and their scripted experts."""
