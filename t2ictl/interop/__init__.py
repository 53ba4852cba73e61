"""The field's released files (PyTorch checkpoints, pickles) read safely and mapped onto t2ictl's models."""
