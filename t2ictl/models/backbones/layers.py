"""Layers several backbones share: DF-GAN's generator and discriminator blocks (GALIP and SSA-GAN build on them) and
convolutions and dense layers initialised as PyTorch initialises them, which the official results were obtained with."""

from __future__ import annotations

import math

import keras
from keras import layers, ops

LEAKY_SLOPE = 0.2  # every LeakyReLU of the official models


def generator_widths(image_size: int) -> list[int]:
    """Channel multipliers of nf from the 4x4 map to the image (official get_G_in_out_chs); one G block per pair."""
    return discriminator_widths(image_size)[::-1]


def discriminator_widths(image_size: int, cap: int = 8) -> list[int]:
    """Channel multipliers of nf from the image to the 4x4 map (official get_D_in_out_chs); one D block per pair."""
    blocks = int(math.log2(image_size)) - 2
    return [min(2**index, cap) for index in range(blocks + 1)]


def uniform_fan_in(fan_in: int) -> keras.initializers.Initializer:
    """PyTorch's default for Linear/Conv2d kernels and biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound)


def torch_conv(filters: int, size: int, in_channels: int, strides: int = 1, padding: str = "same",
               use_bias: bool = True, name: str | None = None) -> layers.Conv2D:
    fan_in = size * size * in_channels
    return layers.Conv2D(filters, size, strides=strides, padding=padding, use_bias=use_bias,
                         kernel_initializer=uniform_fan_in(fan_in), bias_initializer=uniform_fan_in(fan_in),
                         name=name)


def channel_shortcut(in_channels: int, out_channels: int) -> layers.Conv2D | None:
    """The residual blocks' shortcut: a 1x1 conv when the channels change, else none (the identity)."""
    return torch_conv(out_channels, 1, in_channels, name="shortcut") if in_channels != out_channels else None


def torch_dense(units: int, in_units: int, name: str | None = None, **kwargs) -> layers.Dense:
    initializers = {"kernel_initializer": uniform_fan_in(in_units), "bias_initializer": uniform_fan_in(in_units)}
    return layers.Dense(units, name=name, **{**initializers, **kwargs})


def condition_mlp(name: str, channels: int, hidden: int, condition_dim: int,
                  out_bias: str) -> tuple[layers.Dense, layers.Dense]:
    """The two layers of an affine block's gamma or beta MLP: condition -> hidden (ReLU) -> channels, the output
    layer's kernel at zero and its bias at `out_bias`, so the block starts as a fixed scale and shift."""
    return (torch_dense(hidden, condition_dim, activation="relu", name=f"{name}_hidden"),
            torch_dense(channels, hidden, kernel_initializer="zeros", bias_initializer=out_bias, name=f"{name}_out"))


class Affine(layers.Layer):
    """x * gamma(c) + beta(c) per channel; gamma and beta come from 2-layer MLPs and start at 1 and 0."""

    def __init__(self, channels: int, condition_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.gamma_hidden, self.gamma_out = condition_mlp("gamma", channels, channels, condition_dim, "ones")
        self.beta_hidden, self.beta_out = condition_mlp("beta", channels, channels, condition_dim, "zeros")

    def build(self, features_shape, condition_shape):
        for hidden, out in ((self.gamma_hidden, self.gamma_out), (self.beta_hidden, self.beta_out)):
            hidden.build(condition_shape)
            out.build(hidden.compute_output_shape(condition_shape))

    def call(self, features, condition):
        gamma = self.gamma_out(self.gamma_hidden(condition))[:, None, None, :]
        beta = self.beta_out(self.beta_hidden(condition))[:, None, None, :]
        return features * gamma + beta


class FusionBlock(layers.Layer):
    """The official DFBLK: affine, LeakyReLU, affine, LeakyReLU."""

    def __init__(self, channels: int, condition_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.first = Affine(channels, condition_dim, name="affine_0")
        self.second = Affine(channels, condition_dim, name="affine_1")

    def build(self, features_shape, condition_shape):
        self.first.build(features_shape, condition_shape)
        self.second.build(features_shape, condition_shape)

    def call(self, features, condition):
        h = ops.leaky_relu(self.first(features, condition), LEAKY_SLOPE)
        return ops.leaky_relu(self.second(h, condition), LEAKY_SLOPE)


class GeneratorBlock(layers.Layer):
    """Upsample x2, then shortcut + (fusion, conv3x3, fusion, conv3x3)."""

    def __init__(self, in_channels: int, out_channels: int, condition_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.upsample = layers.UpSampling2D(2, interpolation="nearest", name="upsample")
        self.fuse_1 = FusionBlock(in_channels, condition_dim, name="fuse_1")
        self.conv_1 = torch_conv(out_channels, 3, in_channels, name="conv_1")
        self.fuse_2 = FusionBlock(out_channels, condition_dim, name="fuse_2")
        self.conv_2 = torch_conv(out_channels, 3, out_channels, name="conv_2")
        self.shortcut = channel_shortcut(in_channels, out_channels)

    def upsampled_shape(self, features_shape) -> tuple:
        batch, height, width, _ = features_shape
        return (batch, None if height is None else 2 * height, None if width is None else 2 * width, self.in_channels)

    def build(self, features_shape, condition_shape):
        up = self.upsampled_shape(features_shape)
        out = up[:3] + (self.out_channels,)
        self.fuse_1.build(up, condition_shape)
        self.conv_1.build(up)
        self.fuse_2.build(out, condition_shape)
        self.conv_2.build(out)
        if self.shortcut is not None:
            self.shortcut.build(up)

    def call(self, features, condition):
        x = self.upsample(features)
        h = self.conv_1(self.fuse_1(x, condition))
        h = self.conv_2(self.fuse_2(h, condition))
        return (x if self.shortcut is None else self.shortcut(x)) + h


class DiscriminatorBlock(layers.Layer):
    """avgpool(shortcut(x)) + gamma * (conv4x4/2, LReLU, conv3x3, LReLU)(x), gamma learned from gate_init (0 in
    the official code)."""

    def __init__(self, in_channels: int, out_channels: int, gate_init: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.in_channels, self.out_channels, self.gate_init = in_channels, out_channels, gate_init
        self.down = torch_conv(out_channels, 4, in_channels, strides=2, use_bias=False, name="down")
        self.conv = torch_conv(out_channels, 3, out_channels, use_bias=False, name="conv")
        self.shortcut = channel_shortcut(in_channels, out_channels)
        self.pool = layers.AveragePooling2D(2, name="pool")

    def build(self, features_shape):
        batch, height, width, _ = features_shape
        self.gamma = self.add_weight(shape=(), initializer=keras.initializers.Constant(self.gate_init), name="gamma")
        self.down.build(features_shape)
        half = (batch, None if height is None else height // 2, None if width is None else width // 2)
        self.conv.build(half + (self.out_channels,))
        if self.shortcut is not None:
            self.shortcut.build(features_shape)

    def call(self, features):
        h = ops.leaky_relu(self.down(features), LEAKY_SLOPE)
        h = ops.leaky_relu(self.conv(h), LEAKY_SLOPE)
        skip = features if self.shortcut is None else self.shortcut(features)
        return self.pool(skip) + ops.cast(self.gamma, h.dtype) * h
