"""Chunked offline RL: a chunk critic learned from the episode store, and three ways to turn it
into a better policy (best-of-N, an EXPO-style edit policy, Q-weighted diffusion fine-tuning),
then optionally online fine-tuning.

    stores -> ChunkData (checks, rewards) -> base samples per frame -> ChunkCritic (TD + CQL)
           -> BestOfNPolicy | ExpoPolicy | Q-weighted DiffusionPolicy -> online (retain | WSRL)
"""
