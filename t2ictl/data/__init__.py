"""Data: dataset sources, the TFRecord schema, the vocabulary and the tf.data input pipeline."""
