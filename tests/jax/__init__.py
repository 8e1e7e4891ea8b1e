"""seqbatch.jax: the grain source and the JAX loop helpers."""
