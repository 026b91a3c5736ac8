"""Slow, obviously-correct float64 oracles: ``sampled`` for the sampled losses, samplers and
lookups, ``contrastive`` for the retrieval losses (``from reference import sampled as ref``)."""
