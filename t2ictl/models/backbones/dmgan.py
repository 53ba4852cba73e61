"""DM-GAN (Zhu et al., CVPR 2019): AttnGAN's generator with dynamic memory refinement in place of word attention.

The rules, as the official code (MinfengZhu/DM-GAN: code/model.py, code/spectral.py, code/trainer.py,
code/cfg/bird_DMGAN.yml, coco_DMGAN.yml) has them; everything not listed is AttnGAN's (see attngan.py):
- memory writing: the previous map's spatial mean m (cut from the gradient) and each word w_t give a writing gate
  g_t = sigmoid(A w_t + B m) (A, B linear without bias); memory slot t = relu(M_w w_t) g_t + relu(M_r m) (1 - g_t),
  M_w and M_r 1x1 convolutions (with bias) to 2 gf channels.
- key addressing and value reading: keys and values are relu(1x1 conv to gf) of the memory; every pixel x reads
  o = sum_t softmax_t(x . key_t) value_t over the real words (masked as AttnGAN's attention, batch_shared_mask too).
- response gate: r = sigmoid(conv1x1(concat(x, o))) (with bias); the new map x (1 - r) + o r, duplicated to 2 gf
  channels, goes through the R_NUM residual blocks and the up block as in AttnGAN.
- discriminators: AttnGAN's layout with spectral normalisation (one power iteration) on every conv of the image
  encoder and of the conditional joint conv, all with biases and without BatchNorm; the logit convs are plain.
- gf 64, df 32 on CUB and COCO; R_NUM 2 (CUB) / 3 (COCO); lambda 5 / 50; Adam 2e-4, betas (0.5, 0.999).

Spectral normalisation is PyTorch's: the trainable weight is W, the layer convolves with W / sigma(W), sigma from one
power iteration per training call whose vector u is kept between calls (u, v cut from the gradient, sigma not).
"""

from __future__ import annotations

from keras import layers, ops

from t2ictl.models.backbones.attngan import AttnGAN, masked_softmax_over_words, orthogonal
from t2ictl.models.backbones.configs import DMGANConfig
from t2ictl.models.backbones.layers import LEAKY_SLOPE


class MemoryRefinement(layers.Layer):
    """(map [B,H,W,C], words [B,T,D], mask [B,T]) -> the refined map, duplicated to [B,H,W,2C]."""

    def __init__(self, channels: int, batch_shared_mask: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.batch_shared_mask = batch_shared_mask
        dense = dict(kernel_initializer=orthogonal())
        self.word_gate = layers.Dense(1, use_bias=False, name="A", **dense)
        self.image_gate = layers.Dense(1, use_bias=False, name="B", **dense)
        self.write_words = layers.Dense(2 * channels, activation="relu", name="M_w", **dense)
        self.write_image = layers.Dense(2 * channels, activation="relu", name="M_r", **dense)
        self.key = layers.Dense(channels, activation="relu", name="key", **dense)
        self.value = layers.Dense(channels, activation="relu", name="value", **dense)
        self.response = layers.Dense(1, name="response_gate", **dense)

    def build(self, features_shape, words_shape, word_mask_shape):
        channels = features_shape[-1]
        self.word_gate.build(words_shape)
        self.write_words.build(words_shape)
        self.image_gate.build((None, channels))
        self.write_image.build((None, channels))
        self.key.build((None, None, 2 * channels))
        self.value.build((None, None, 2 * channels))
        self.response.build((None, None, None, 2 * channels))

    def call(self, features, words, word_mask):
        words = ops.cast(words, features.dtype)
        mean = ops.stop_gradient(ops.mean(features, axis=(1, 2)))  # [B, C]: AvgPool2d(size)(h).detach()
        gate = ops.sigmoid(self.word_gate(words) + self.image_gate(mean)[:, None, :])  # [B, T, 1]
        memory = self.write_words(words) * gate + self.write_image(mean)[:, None, :] * (1.0 - gate)
        key, value = self.key(memory), self.value(memory)  # [B, T, C]
        weights = masked_softmax_over_words(ops.einsum("bhwc,btc->bhwt", features, key), word_mask,
                                            self.batch_shared_mask)
        read = ops.einsum("bhwt,btc->bhwc", weights, value)
        response = ops.sigmoid(self.response(ops.concatenate([features, read], axis=-1)))
        refined = features * (1.0 - response) + read * response
        return ops.concatenate([refined, refined], axis=-1)


def _unit(x):
    """x / |x|, cut from the gradient: the power iteration's vectors carry none (code/spectral.py uses .data)."""
    return ops.stop_gradient(x / (ops.norm(x) + 1e-12))


class SpectralConv2D(layers.Layer):
    """Conv2D with PyTorch-style spectral normalisation of its kernel (code/spectral.py, one power iteration)."""

    def __init__(self, filters: int, size: int, strides: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.size, self.strides = filters, size, strides

    def build(self, input_shape):
        in_channels = input_shape[-1]
        self.kernel = self.add_weight(shape=(self.size, self.size, in_channels, self.filters),
                                      initializer=orthogonal(), name="kernel")
        self.bias = self.add_weight(shape=(self.filters,), initializer="zeros", name="bias")
        self.u = self.add_weight(shape=(self.filters,), initializer="random_normal", trainable=False, name="u",
                                 aggregation="mean")

    def call(self, inputs, training=False):
        matrix = ops.transpose(ops.reshape(self.kernel, (-1, self.filters)))  # PyTorch's w.view(out, -1)
        u = _unit(self.u)
        v = _unit(ops.matmul(ops.transpose(matrix), u))
        if training:  # one power iteration per training call, kept for the next
            u = _unit(ops.matmul(matrix, v))
            self.u.assign(u)
        sigma = ops.sum(u * ops.matmul(matrix, v))
        # conv(x, W / sigma) computed as conv(x, W) / sigma: the same function and gradient, and a graph TensorFlow's
        # remapper does not mis-fuse (Conv2D on a computed kernel + BiasAdd + LeakyReLU fails there)
        out = ops.conv(inputs, ops.cast(self.kernel, self.compute_dtype), strides=self.strides, padding="same")
        return out / ops.cast(sigma, self.compute_dtype) + ops.cast(self.bias, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        height, width = (None if n is None else -(-n // self.strides) for n in (height, width))
        return (batch, height, width, self.filters)


class DMGAN(AttnGAN):
    config_class = DMGANConfig
    config: DMGANConfig
    name = "dmgan"

    def word_fusion(self, channels: int, name: str) -> layers.Layer:
        return MemoryRefinement(channels, self.config.batch_shared_mask, name=name)

    def down_block(self, x, filters: int, normalise: bool, name: str):
        x = SpectralConv2D(filters, 4, strides=2, name=f"{name}_conv")(x)
        return layers.LeakyReLU(LEAKY_SLOPE, name=f"{name}_act")(x)

    def block_3x3(self, x, filters: int, name: str):
        x = SpectralConv2D(filters, 3, name=f"{name}_conv")(x)
        return layers.LeakyReLU(LEAKY_SLOPE, name=f"{name}_act")(x)
