"""Inception-v3 laid out as torchvision's, in Keras, so the field's PyTorch weights load layer by layer.

Keras' own InceptionV3 is another network for these weights: its batch norms have no gamma, its average pools leave
the padded border out of the mean, and its branches are ordered differently. Two variants:
- "torchvision" (AttnGAN's DAMSM image encoder): average pools count the zero border (`count_include_pad=True`);
- "fid" (pytorch-fid's FID Inception): average pools leave the border out, and Mixed_7c pools by max.
Every layer is named as its module in torchvision's state dict (`Mixed_5b.branch1x1.conv`, `.bn`), so a state dict
maps onto the model by name (`torch_inception_weights`). Inputs are NHWC images already at 299 x 299 and scaled as the
weights expect; the model returns the 17x17x768 map after Mixed_6e and the 8x8x2048 map after Mixed_7c.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

VARIANTS = ("torchvision", "fid")
SIZE = 299


def build_torch_inception(variant: str = "torchvision", name: str = "torch_inception_v3") -> keras.Model:
    """images [B, 299, 299, 3] -> {"mixed_6e": [B, 17, 17, 768], "mixed_7c": [B, 8, 8, 2048]}."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown Inception variant {variant!r}; use one of {VARIANTS}")
    fid = variant == "fid"
    images = keras.Input(shape=(SIZE, SIZE, 3), name="images")
    x = conv(images, "Conv2d_1a_3x3", 32, 3, strides=2)
    x = conv(x, "Conv2d_2a_3x3", 32, 3)
    x = conv(x, "Conv2d_2b_3x3", 64, 3, padding="same")
    x = layers.MaxPooling2D(3, 2, name="maxpool1")(x)
    x = conv(x, "Conv2d_3b_1x1", 80, 1)
    x = conv(x, "Conv2d_4a_3x3", 192, 3)
    x = layers.MaxPooling2D(3, 2, name="maxpool2")(x)
    for block, pool_features in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
        x = inception_a(x, block, pool_features, fid)
    x = inception_b(x, "Mixed_6a")
    for block, channels_7x7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
        x = inception_c(x, block, channels_7x7, fid)
    mixed_6e = x
    x = inception_d(x, "Mixed_7a")
    x = inception_e(x, "Mixed_7b", "avg_exclude_border" if fid else "avg")
    x = inception_e(x, "Mixed_7c", "max" if fid else "avg")
    return keras.Model(images, {"mixed_6e": mixed_6e, "mixed_7c": x}, name=name)


def conv(x, name: str, filters: int, kernel, strides: int = 1, padding: str = "valid"):
    """torchvision's BasicConv2d: convolution without bias, batch norm (eps 1e-3, gamma and beta), ReLU."""
    x = layers.Conv2D(filters, kernel, strides=strides, padding=padding, use_bias=False, name=f"{name}.conv")(x)
    x = layers.BatchNormalization(epsilon=1e-3, momentum=0.9, synchronized=True, name=f"{name}.bn")(x)
    return layers.ReLU(name=f"{name}.relu")(x)


def pool_3x3(x, name: str, kind: str):
    """The 3x3 stride-1 pool before a branch_pool convolution, padded by one pixel."""
    if kind == "avg":  # count_include_pad=True: the zero border enters every mean as zeros
        return layers.AveragePooling2D(3, 1, name=f"{name}.avg_pool")(layers.ZeroPadding2D(1, name=f"{name}.pad")(x))
    if kind == "avg_exclude_border":  # TensorFlow's SAME average pool divides by the pixels inside
        return layers.AveragePooling2D(3, 1, padding="same", name=f"{name}.avg_pool")(x)
    return layers.MaxPooling2D(3, 1, padding="same", name=f"{name}.max_pool")(x)


def inception_a(x, name: str, pool_features: int, fid: bool):
    branch1x1 = conv(x, f"{name}.branch1x1", 64, 1)
    branch5x5 = conv(x, f"{name}.branch5x5_1", 48, 1)
    branch5x5 = conv(branch5x5, f"{name}.branch5x5_2", 64, 5, padding="same")
    branch3x3dbl = conv(x, f"{name}.branch3x3dbl_1", 64, 1)
    branch3x3dbl = conv(branch3x3dbl, f"{name}.branch3x3dbl_2", 96, 3, padding="same")
    branch3x3dbl = conv(branch3x3dbl, f"{name}.branch3x3dbl_3", 96, 3, padding="same")
    pooled = pool_3x3(x, name, "avg_exclude_border" if fid else "avg")
    branch_pool = conv(pooled, f"{name}.branch_pool", pool_features, 1)
    return layers.Concatenate(name=name)([branch1x1, branch5x5, branch3x3dbl, branch_pool])


def inception_b(x, name: str):
    branch3x3 = conv(x, f"{name}.branch3x3", 384, 3, strides=2)
    branch3x3dbl = conv(x, f"{name}.branch3x3dbl_1", 64, 1)
    branch3x3dbl = conv(branch3x3dbl, f"{name}.branch3x3dbl_2", 96, 3, padding="same")
    branch3x3dbl = conv(branch3x3dbl, f"{name}.branch3x3dbl_3", 96, 3, strides=2)
    branch_pool = layers.MaxPooling2D(3, 2, name=f"{name}.max_pool")(x)
    return layers.Concatenate(name=name)([branch3x3, branch3x3dbl, branch_pool])


def inception_c(x, name: str, c7: int, fid: bool):
    branch1x1 = conv(x, f"{name}.branch1x1", 192, 1)
    branch7x7 = conv(x, f"{name}.branch7x7_1", c7, 1)
    branch7x7 = conv(branch7x7, f"{name}.branch7x7_2", c7, (1, 7), padding="same")
    branch7x7 = conv(branch7x7, f"{name}.branch7x7_3", 192, (7, 1), padding="same")
    branch7x7dbl = conv(x, f"{name}.branch7x7dbl_1", c7, 1)
    for i, (kernel, filters) in enumerate((((7, 1), c7), ((1, 7), c7), ((7, 1), c7), ((1, 7), 192)), start=2):
        branch7x7dbl = conv(branch7x7dbl, f"{name}.branch7x7dbl_{i}", filters, kernel, padding="same")
    pooled = pool_3x3(x, name, "avg_exclude_border" if fid else "avg")
    branch_pool = conv(pooled, f"{name}.branch_pool", 192, 1)
    return layers.Concatenate(name=name)([branch1x1, branch7x7, branch7x7dbl, branch_pool])


def inception_d(x, name: str):
    branch3x3 = conv(x, f"{name}.branch3x3_1", 192, 1)
    branch3x3 = conv(branch3x3, f"{name}.branch3x3_2", 320, 3, strides=2)
    branch7x7x3 = conv(x, f"{name}.branch7x7x3_1", 192, 1)
    branch7x7x3 = conv(branch7x7x3, f"{name}.branch7x7x3_2", 192, (1, 7), padding="same")
    branch7x7x3 = conv(branch7x7x3, f"{name}.branch7x7x3_3", 192, (7, 1), padding="same")
    branch7x7x3 = conv(branch7x7x3, f"{name}.branch7x7x3_4", 192, 3, strides=2)
    branch_pool = layers.MaxPooling2D(3, 2, name=f"{name}.max_pool")(x)
    return layers.Concatenate(name=name)([branch3x3, branch7x7x3, branch_pool])


def inception_e(x, name: str, pool: str):
    branch1x1 = conv(x, f"{name}.branch1x1", 320, 1)
    branch3x3 = conv(x, f"{name}.branch3x3_1", 384, 1)
    branch3x3 = layers.Concatenate(name=f"{name}.branch3x3")([
        conv(branch3x3, f"{name}.branch3x3_2a", 384, (1, 3), padding="same"),
        conv(branch3x3, f"{name}.branch3x3_2b", 384, (3, 1), padding="same")])
    branch3x3dbl = conv(x, f"{name}.branch3x3dbl_1", 448, 1)
    branch3x3dbl = conv(branch3x3dbl, f"{name}.branch3x3dbl_2", 384, 3, padding="same")
    branch3x3dbl = layers.Concatenate(name=f"{name}.branch3x3dbl")([
        conv(branch3x3dbl, f"{name}.branch3x3dbl_3a", 384, (1, 3), padding="same"),
        conv(branch3x3dbl, f"{name}.branch3x3dbl_3b", 384, (3, 1), padding="same")])
    branch_pool = conv(pool_3x3(x, name, pool), f"{name}.branch_pool", 192, 1)
    return layers.Concatenate(name=name)([branch1x1, branch3x3, branch3x3dbl, branch_pool])


def torch_inception_weights(model: keras.Model, take) -> None:
    """Set every convolution and batch norm of `model` from a state dict with torchvision's names.

    `take(key, shape)` returns the parameter `key` of `shape` in torch's layout (a `torch_files.StateDict`).
    """
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            height, width, channels_in, channels_out = layer.kernel.shape
            kernel = take(f"{layer.name}.weight", (channels_out, channels_in, height, width))
            layer.set_weights([np.transpose(kernel, (2, 3, 1, 0))])
        elif isinstance(layer, layers.BatchNormalization):
            shape = tuple(layer.gamma.shape)
            layer.set_weights([take(f"{layer.name}.{k}", shape)
                               for k in ("weight", "bias", "running_mean", "running_var")])
