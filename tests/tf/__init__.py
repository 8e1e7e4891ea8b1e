"""The tf.data adapter and tf.distribute."""
