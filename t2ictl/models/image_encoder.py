"""The DAMSM image encoder (AttnGAN's CNN_ENCODER) and a small CNN trunk for the embedded data.

`inception_v3`: images in [-1, 1] are resized to 299x299 (bilinear, as AttnGAN) and run through Keras' Inception-v3;
the 17x17x768 map after `mixed7` (torchvision's Mixed_6e) is projected by a 1x1 convolution to the text dimension
("regions", 289 per image), the 2048-d average pool after `mixed10` (Mixed_7c) by a dense layer ("global").
AttnGAN freezes the ImageNet trunk and trains only the two projections; a trunk built without pretrained weights must be
trained, so `train_trunk="auto"` trains it exactly when no weights are loaded.

`inception_v3_torchvision`: the same encoder on torchvision's Inception-v3 (`torch_inception.py`), the network of
AttnGAN's released DAMSM image encoders; `weights` may name torchvision's ImageNet `.pth` file (AttnGAN's start).

`small`: four stride-2 convolutions; the map after three of them (size/8) gives the regions and the pooled last one the
global feature. It keeps pretraining on 64-px embedded data to seconds per epoch on a CPU.

Every trunk's batch norms are synchronised: a trained trunk normalises over the global batch on any number of replicas.
"""

from __future__ import annotations

from pathlib import Path

import keras
from keras import layers, ops

from t2ictl.errors import UserError
from t2ictl.torch_files import StateDict, read_checkpoint
from t2ictl.models.torch_inception import build_torch_inception, torch_inception_weights

INCEPTION_LOCAL_LAYER = "mixed7"
INCEPTION_GLOBAL_LAYER = "mixed10"
INCEPTION_SIZE = 299
IMAGENET_NOTOP_FILE = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
IMAGENET_NOTOP_URL = ("https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/"
                      + IMAGENET_NOTOP_FILE)


def build_image_encoder(trunk: str, image_size: int, text_dim: int = 256, weights: str = "none",
                        train_trunk: str = "auto", width: int = 32, name: str = "image_encoder") -> keras.Model:
    """images [B, S, S, 3] in [-1, 1] -> {"regions": [B, R, text_dim], "global": [B, text_dim]}."""
    images = keras.Input(shape=(image_size, image_size, 3), name="images")
    if trunk == "inception_v3":
        local_map, pooled = _inception_trunk(images, weights, train_trunk)
    elif trunk == "inception_v3_torchvision":
        local_map, pooled = _torchvision_trunk(images, weights, train_trunk)
    elif trunk == "small":
        if weights != "none":
            raise UserError("the small image trunk has no pretrained weights; set pretrain.image_weights = \"none\"")
        local_map, pooled = _small_trunk(images, width)
    else:
        raise UserError(f"unknown image trunk {trunk!r}; use inception_v3, inception_v3_torchvision or small")
    init = keras.initializers.RandomUniform(-0.1, 0.1)
    local = layers.Conv2D(text_dim, 1, use_bias=False, kernel_initializer=init, name="local_projection")(local_map)
    regions = layers.Reshape((-1, text_dim), name="regions")(local)
    global_feature = layers.Dense(text_dim, kernel_initializer=init, name="global")(pooled)
    return keras.Model(images, {"regions": regions, "global": global_feature}, name=name)


def _inception_trunk(images, weights: str, train_trunk: str):
    resized = layers.Resizing(INCEPTION_SIZE, INCEPTION_SIZE, interpolation="bilinear", name="resize_299")(images)
    base = keras.applications.InceptionV3(include_top=False, weights=None,
                                          input_shape=(INCEPTION_SIZE, INCEPTION_SIZE, 3))
    loaded = _load_inception_weights(base, weights)
    trainable = {"auto": not loaded, "true": True, "false": False}[train_trunk]
    trunk = keras.Model(base.input, [base.get_layer(INCEPTION_LOCAL_LAYER).output,
                                     base.get_layer(INCEPTION_GLOBAL_LAYER).output], name="inception_v3")
    trunk.trainable = trainable
    for layer in base.layers:  # a trained trunk's statistics over the global batch, as the other trunks'
        if isinstance(layer, layers.BatchNormalization):
            layer.synchronized = True
    local_map, last_map = trunk(resized, training=None if trainable else False)
    pooled = layers.GlobalAveragePooling2D(name="pool")(last_map)
    return local_map, pooled


def _torchvision_trunk(images, weights: str, train_trunk: str):
    resized = layers.Resizing(INCEPTION_SIZE, INCEPTION_SIZE, interpolation="bilinear", name="resize_299")(images)
    trunk = build_torch_inception("torchvision")
    if weights != "none":
        torch_inception_weights(trunk, StateDict(read_checkpoint(Path(weights)), Path(weights)))
    trainable = {"auto": weights == "none", "true": True, "false": False}[train_trunk]
    trunk.trainable = trainable
    maps = trunk(resized, training=None if trainable else False)
    pooled = layers.GlobalAveragePooling2D(name="pool")(maps["mixed_7c"])
    return maps["mixed_6e"], pooled


def _load_inception_weights(base: keras.Model, weights: str) -> bool:
    """Load ImageNet or file weights into the trunk; True if any were loaded."""
    if weights == "none":
        return False
    if weights == "imagenet":
        try:
            path = keras.utils.get_file(IMAGENET_NOTOP_FILE, IMAGENET_NOTOP_URL, cache_subdir="models")
        except Exception as exc:  # Keras raises a bare Exception for fetch failures
            raise UserError(
                f"cannot fetch the ImageNet Inception-v3 weights {IMAGENET_NOTOP_FILE} ({exc}); download "
                f"{IMAGENET_NOTOP_URL} and pass --set pretrain.image_weights=PATH, or put it in ~/.keras/models/"
            ) from None
    else:
        path = weights
    if not Path(path).is_file():
        raise UserError(f"Inception-v3 weights file {path} does not exist (pretrain.image_weights)")
    try:
        base.load_weights(path)
    except (ValueError, OSError) as exc:
        raise UserError(f"{path} is not an Inception-v3 (include_top=False) weights file: {exc}") from None
    return True


def _small_trunk(images, width: int):
    def block(x, filters, index):
        x = layers.Conv2D(filters, 4, strides=2, padding="same", use_bias=False, name=f"conv{index}")(x)
        x = layers.BatchNormalization(synchronized=True, name=f"bn{index}")(x)
        return layers.LeakyReLU(0.2, name=f"act{index}")(x)

    x = images
    for index, multiple in enumerate((1, 2, 4), start=1):
        x = block(x, width * multiple, index)
    local_map = x
    last = block(x, width * 8, 4)
    pooled = layers.GlobalAveragePooling2D(name="pool")(last)
    return local_map, pooled


def l2_normalize(x, axis: int = -1):
    x = ops.cast(x, "float32")
    return x / ops.sqrt(ops.maximum(ops.sum(x * x, axis=axis, keepdims=True), 1e-12))
