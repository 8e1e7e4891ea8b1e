"""One feature through every adapter at once: tf.data, the Keras sequence, torch and JAX."""
