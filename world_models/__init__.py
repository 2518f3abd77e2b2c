"""World models learned from the episode store, and the imagination environment."""
