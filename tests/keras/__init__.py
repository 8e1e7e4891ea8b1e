"""seqbatch.keras on every Keras backend: layers, callbacks, fit, distribution."""
