"""Adapters that put other simulators' environments behind robot_rl's contracts: robosuite
(imported lazily, an optional extra) and gymnasium's own MuJoCo environments."""
