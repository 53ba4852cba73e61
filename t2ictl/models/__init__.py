"""Keras models: the pretraining encoders and the GAN backbones."""
