"""The shared contracts: keys, chunk policies, environment wrappers, reward models, drivers."""
