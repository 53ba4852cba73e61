"""AttnGAN (Xu et al., CVPR 2018): a multi-stage text-to-image GAN with word attention and the DAMSM loss.

The rules, as the official code (taoxugit/AttnGAN: code/model.py, code/GlobalAttention.py, code/miscc/losses.py,
code/trainer.py, code/cfg/bird_attn2.yml, coco_attn2.yml) has them:
- conditioning augmentation: the sentence goes through a linear layer (with bias) to 4 c channels and a GLU; the halves
  are mu and logvar; c = mu + exp(logvar / 2) * epsilon.
- first stage: concat(c, z) -> linear (no bias) to 4x4 x 32 gf x 2, BatchNorm, GLU -> 4x4 x 16 gf; four up blocks
  (nearest x2, conv3x3 without bias to twice the channels, BatchNorm, GLU) halve the channels to gf at 64 px.
- each further stage: every pixel of the previous map attends over the caption's words (a 1x1 conv without bias maps
  the words to gf channels; softmax over the real words of pixel . word); concat(map, attended words) goes through
  R_NUM residual blocks (conv3x3, BN, GLU, conv3x3, BN, + input) and an up block to gf channels at twice the size.
- every stage ends in conv3x3 (no bias) to RGB and tanh; all convolutions and linear layers start orthogonal, the
  BatchNorm scales N(1, 0.02) (miscc/utils.py weights_init, applied to G and every D).
- one discriminator per stage: conv4x4/2 (no bias) to df, LReLU(0.2), then conv4x4/2 + BN + LReLU doubling the
  channels down to 4x4 (extra down blocks for 128 and 256 px, then conv3x3 + BN + LReLU blocks back to 8 df). Two
  heads on the 4x4 x 8 df map: unconditional, a conv4x4/4 (with bias) to one logit; conditional, the sentence tiled
  over the map, conv3x3 + BN + LReLU to 8 df, then the same conv4x4/4.
- losses (sigmoid cross-entropy): per stage D = (real_u + real_c) / 2 + (fake_u + fake_c + mismatch_c) / 3, the
  mismatched pairs (image i, sentence i+1) for i < B - 1; G = sum over stages of (fake_u + fake_c called real)
  + lambda x (word + sentence DAMSM, both directions, on the last stage's images by the frozen pretrained encoders,
  same-class pairs masked) + KL(N(mu, sigma) || N(0, I)).
- Adam lr 2e-4, betas (0.5, 0.999) for G and for each D (one Adam over all discriminators is the same, their
  parameters being disjoint); the generator EMA decay 0.999; gf 32 / df 64 / R_NUM 2 / lambda 5 on CUB, gf 48 /
  df 96 / R_NUM 3 / lambda 50 on COCO; gamma1 4, gamma2 5, gamma3 10.

Adaptations: the stage sizes are image_size / 2^k (k = stages-1 .. 0), so the first stage of a 32-px, 2-stage model
works at 16 px; the first stage's up blocks start at gf x 2^ups channels so that every stage ends at gf; a
discriminator for less than 64 px has fewer down blocks and one conv3x3 block up to 8 df. The official attention
masks padding with `mask.repeat(queryL, 1)`, which pairs the pixels of one example with the padding of others (a
known bug); here every example's words are masked with its own padding, unless `batch_shared_mask` (which the import
of a released model turns on, so that it draws what its authors saw). All randomness is in the noise input:
its first z_dim entries are z, the rest the CA epsilon. NHWC instead of NCHW.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf
from keras import layers, ops

from t2ictl import replicas
from t2ictl.errors import UserError
from t2ictl.losses.adversarial import bce, kl_divergence
from t2ictl.losses.damsm import generated_image_loss
from t2ictl.models.backbones.base import Backbone
from t2ictl.models.backbones.configs import AttnGANConfig
from t2ictl.models.backbones.layers import LEAKY_SLOPE
from t2ictl.models.text_encoder import TextFeatures

_MASKED = -1e9


def orthogonal() -> keras.initializers.Initializer:
    """miscc/utils.py weights_init: orthogonal_(weight, 1.0), bias 0. A new initializer for every layer: one shared
    instance would give every kernel of a shape the same matrix, from a seed drawn when this module was imported."""
    return keras.initializers.Orthogonal(1.0)


def conv(filters: int, size: int, strides: int = 1, use_bias: bool = False, name: str | None = None,
         padding: str = "same") -> layers.Conv2D:
    return layers.Conv2D(filters, size, strides=strides, padding=padding, use_bias=use_bias,
                         kernel_initializer=orthogonal(), name=name)


def batch_norm(name: str | None = None) -> layers.BatchNormalization:
    """PyTorch's BatchNorm: momentum 0.1 (Keras 0.9), eps 1e-5; weights_init draws the scale from N(1, 0.02).
    Statistics over the global batch under tf.distribute."""
    return layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name, synchronized=True,
                                     gamma_initializer=keras.initializers.RandomNormal(1.0, 0.02))


class GLU(layers.Layer):
    """First half of the channels times the sigmoid of the second half (AttnGAN's GLU)."""

    def call(self, x):
        half = x.shape[-1] // 2
        return x[..., :half] * ops.sigmoid(x[..., half:])

    def compute_output_shape(self, shape):
        return shape[:-1] + (shape[-1] // 2,)


def up_block(x, channels: int, name: str):
    x = layers.UpSampling2D(2, interpolation="nearest", name=f"{name}_up")(x)
    x = conv(2 * channels, 3, name=f"{name}_conv")(x)
    return GLU(name=f"{name}_glu")(batch_norm(f"{name}_bn")(x))


def residual_block(x, channels: int, name: str):
    h = conv(2 * channels, 3, name=f"{name}_conv_1")(x)
    h = GLU(name=f"{name}_glu")(batch_norm(f"{name}_bn_1")(h))
    h = batch_norm(f"{name}_bn_2")(conv(channels, 3, name=f"{name}_conv_2")(h))
    return layers.Add(name=f"{name}_add")([x, h])


class ConditioningAugmentation(layers.Layer):
    """sentence, noise -> (c, mu, logvar); epsilon is noise[:, z_dim:], so the same noise gives the same c."""

    def __init__(self, condition_dim: int, z_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.condition_dim, self.z_dim = condition_dim, z_dim
        self.fc = layers.Dense(4 * condition_dim, kernel_initializer=orthogonal(), name="fc")
        self.glu = GLU()

    def build(self, sentence_shape, noise_shape):
        self.fc.build(sentence_shape)

    def call(self, sentence, noise):
        x = self.glu(self.fc(sentence))
        mu, logvar = x[:, :self.condition_dim], x[:, self.condition_dim:]
        epsilon = ops.cast(noise[:, self.z_dim:], mu.dtype)
        c = mu + ops.exp(0.5 * logvar) * epsilon
        return c, ops.cast(mu, "float32"), ops.cast(logvar, "float32")


def masked_softmax_over_words(scores, mask, batch_shared: bool = False):
    """Softmax over the words of scores [B, H, W, T], padding words (mask 0) excluded; computed in float32 (a float16
    -1e9 is -inf, and -inf x 0 is NaN), returned in the scores' dtype. batch_shared masks as the official
    `mask.repeat(queryL, 1)` does: pixel q of example b with the padding of example (b * H * W + q) mod B."""
    mask = ops.cast(mask, "float32")
    if batch_shared:
        batch, height, width = ops.shape(scores)[0], scores.shape[1], scores.shape[2]
        rows = (ops.arange(batch)[:, None] * (height * width) + ops.arange(height * width)[None, :]) % batch
        word_mask = ops.reshape(ops.take(mask, rows, axis=0), (-1, height, width, mask.shape[-1]))
    else:
        word_mask = mask[:, None, None, :]
    weights = ops.softmax(ops.cast(scores, "float32") + _MASKED * (1.0 - word_mask), axis=-1)
    return ops.cast(weights, scores.dtype)


class WordAttention(layers.Layer):
    """AttnGAN's GlobalAttentionGeneral: (map [B,H,W,C], words [B,T,D], mask [B,T]) -> attended words [B,H,W,C]."""

    def __init__(self, channels: int, batch_shared_mask: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.batch_shared_mask = batch_shared_mask
        self.project = layers.Dense(channels, use_bias=False, kernel_initializer=orthogonal(), name="context")

    def build(self, features_shape, words_shape, word_mask_shape):
        self.project.build(words_shape)

    def call(self, features, words, word_mask):
        context = ops.cast(self.project(words), features.dtype)  # [B, T, C]
        weights = masked_softmax_over_words(ops.einsum("bhwc,btc->bhwt", features, context), word_mask,
                                            self.batch_shared_mask)
        return ops.einsum("bhwt,btc->bhwc", weights, context)


class AttentionFusion(layers.Layer):
    """AttnGAN's next-stage input: concat(map, attended words), 2 C channels."""

    def __init__(self, channels: int, batch_shared_mask: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.attention = WordAttention(channels, batch_shared_mask, name="attention")

    def build(self, features_shape, words_shape, word_mask_shape):
        self.attention.build(features_shape, words_shape, word_mask_shape)

    def call(self, features, words, word_mask):
        return ops.concatenate([features, self.attention(features, words, word_mask)], axis=-1)


def discriminator_widths(size: int) -> list[int]:
    """Multipliers of df after each down block (to 4x4) and each conv3x3 block after them (back to 8 df)."""
    downs = int(math.log2(size // 4))
    widths = [2**index for index in range(downs)]  # encode_image_by_16times, then downBlock: 1, 2, 4, 8, 16, 32
    back = []
    while (back or widths)[-1] > 8:  # D_NET128 / D_NET256: Block3x3_leakRelu halving back to 8 df
        back.append((back or widths)[-1] // 2)
    if widths[-1] < 8:  # below 64 px: one conv3x3 block up to the heads' 8 df
        back.append(8)
    return widths + back


class AttnGAN(Backbone):
    config_class = AttnGANConfig
    uses_image_encoder = True
    config: AttnGANConfig
    name = "attngan"

    def __init__(self, config: AttnGANConfig, image_size: int, text_dim: int, max_words: int, encoders=None):
        super().__init__(config, image_size, text_dim, max_words, encoders)
        first = image_size // 2 ** (config.stages - 1)
        if image_size & (image_size - 1) or first < 8:
            raise UserError(f"data.image_size: {type(self).__name__} with {config.stages} stages needs a power of two "
                            f"with a first stage of at least 8 px (e.g. 64 with 1 stage, 256 with 3), got {image_size}")
        self.sizes = config.image_sizes(image_size)

    @property
    def noise_dim(self) -> int:
        return self.config.z_dim + self.config.condition_dim

    # ----------------------------------------------------------------------------------------------------- building

    def build(self) -> None:
        self.generator = self.build_generator()
        self.discriminators = [self.build_discriminator(size) for size in self.sizes]
        self.conditional_heads = [self.build_head(size, conditional=True) for size in self.sizes]
        self.unconditional_heads = [self.build_head(size, conditional=False) for size in self.sizes]

    def word_fusion(self, channels: int, name: str) -> layers.Layer:
        """The layer that fuses the words into a stage's map: (map, words, mask) -> 2 x channels (DM-GAN overrides)."""
        return AttentionFusion(channels, self.config.batch_shared_mask, name=name)

    def build_generator(self) -> keras.Model:
        c = self.config
        gf, first = c.gf_dim, self.sizes[0]
        inputs = self.generator_input_layers()
        condition, mu, logvar = ConditioningAugmentation(c.condition_dim, c.z_dim, name="ca")(
            inputs["sentence"], inputs["noise"])
        z = layers.Identity(name="z")(inputs["noise"][:, :c.z_dim])
        ups = int(math.log2(first // 4))
        x = layers.Concatenate(name="c_z")([condition, z])
        x = layers.Dense(4 * 4 * gf * 2**ups * 2, use_bias=False, kernel_initializer=orthogonal(), name="fc")(x)
        x = GLU(name="fc_glu")(batch_norm("fc_bn")(x))
        x = layers.Reshape((4, 4, gf * 2**ups), name="to_4x4")(x)
        for index in range(ups):
            x = up_block(x, gf * 2 ** (ups - index - 1), name=f"stage_0_up_{index}")
        images = [self.to_rgb(x, 0)]
        for stage in range(1, len(self.sizes)):
            x = self.word_fusion(gf, f"stage_{stage}_fusion")(x, inputs["words"], inputs["mask"])
            for index in range(c.residual_blocks):
                x = residual_block(x, 2 * gf, name=f"stage_{stage}_residual_{index}")
            x = up_block(x, gf, name=f"stage_{stage}_up")
            images.append(self.to_rgb(x, stage))
        return keras.Model(inputs, {"images": images, "mu": mu, "logvar": logvar}, name=f"{self.name}_generator")

    @staticmethod
    def to_rgb(x, stage: int):
        x = conv(3, 3, name=f"stage_{stage}_rgb")(x)
        return layers.Activation("tanh", dtype="float32", name=f"image_{stage}")(x)

    def down_block(self, x, filters: int, normalise: bool, name: str):
        """conv4x4/2 (no bias), BatchNorm (not after the first), LReLU."""
        x = conv(filters, 4, strides=2, name=f"{name}_conv")(x)
        if normalise:
            x = batch_norm(f"{name}_bn")(x)
        return layers.LeakyReLU(LEAKY_SLOPE, name=f"{name}_act")(x)

    def block_3x3(self, x, filters: int, name: str):
        """Block3x3_leakRelu: conv3x3 (no bias), BatchNorm, LReLU."""
        x = batch_norm(f"{name}_bn")(conv(filters, 3, name=f"{name}_conv")(x))
        return layers.LeakyReLU(LEAKY_SLOPE, name=f"{name}_act")(x)

    def build_discriminator(self, size: int) -> keras.Model:
        """images [B, size, size, 3] -> features [B, 4, 4, 8 df] (D_NET64 / D_NET128 / D_NET256)."""
        df = self.config.df_dim
        images = keras.Input((size, size, 3), name="images")
        x = images
        downs = int(math.log2(size // 4))
        for index, width in enumerate(discriminator_widths(size)):
            if index < downs:
                x = self.down_block(x, width * df, normalise=index > 0, name=f"down_{index}")
            else:
                x = self.block_3x3(x, width * df, name=f"back_{index - downs}")
        return keras.Model(images, x, name=f"{self.name}_discriminator_{size}")

    def logits_conv(self):
        return layers.Conv2D(1, 4, strides=4, kernel_initializer=orthogonal(), name="logits")

    def build_head(self, size: int, conditional: bool) -> keras.Model:
        """D_GET_LOGITS: (features [B,4,4,8 df], sentence [B,D]) -> logits [B, 1] float32, conditional or not."""
        df = self.config.df_dim
        features = keras.Input((4, 4, 8 * df), name="features")
        sentence = keras.Input((self.text_dim,), name="sentence")
        x = features
        if conditional:
            tiled = layers.UpSampling2D(4, name="tile_sentence")(layers.Reshape((1, 1, self.text_dim))(sentence))
            x = self.block_3x3(layers.Concatenate(name="joint")([features, tiled]), 8 * df, name="joint")
        logits = layers.Flatten(dtype="float32", name="flat")(self.logits_conv()(x))
        kind = "conditional" if conditional else "unconditional"
        return keras.Model([features, sentence], logits, name=f"{self.name}_{kind}_head_{size}")

    @property
    def discriminator_variables(self) -> list:
        models = self.discriminators + self.conditional_heads + self.unconditional_heads
        return [v for model in models for v in model.trainable_variables]

    def trackables(self) -> dict:
        out = {"generator": self.generator}
        for size, d, cond, uncond in zip(self.sizes, self.discriminators, self.conditional_heads,
                                         self.unconditional_heads):
            out.update({f"discriminator_{size}": d, f"conditional_head_{size}": cond,
                        f"unconditional_head_{size}": uncond})
        return out

    # ------------------------------------------------------------------------------------------------------- losses

    def stage_logits(self, stage: int, images, sentence) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """(features, conditional logits, unconditional logits) of one stage's discriminator."""
        features = self.discriminators[stage](images, training=True)
        conditional = ops.cast(self.conditional_heads[stage]([features, sentence], training=True), "float32")
        unconditional = ops.cast(self.unconditional_heads[stage]([features, sentence], training=True), "float32")
        return features, conditional, unconditional

    def mismatched_logits(self, stage: int, features, sentence) -> tf.Tensor:
        """The conditional logits of (image i, sentence i + 1), i < B - 1, over the global batch."""
        features, sentence = (replicas.gather(x, self.batch_blocks) for x in (features, sentence))
        return ops.cast(self.conditional_heads[stage]([features[:-1], sentence[1:]], training=True), "float32")

    def discriminator_loss(self, real: dict[int, tf.Tensor], fake: list[tf.Tensor], text: TextFeatures) -> dict:
        sentence = text.sentence
        terms = {"real": 0.0, "fake": 0.0, "mismatch": 0.0, "loss": 0.0}
        for stage, size in enumerate(self.sizes):
            features, real_c, real_u = self.stage_logits(stage, real[size], sentence)
            _, fake_c, fake_u = self.stage_logits(stage, fake[stage], sentence)
            wrong_c = self.mismatched_logits(stage, features, sentence)
            real_loss = (bce(real_u, 1.0) + bce(real_c, 1.0)) / 2.0
            fake_loss = (bce(fake_u, 0.0) + bce(fake_c, 0.0) + bce(wrong_c, 0.0)) / 3.0
            terms["real"] += real_loss
            terms["fake"] += fake_loss
            terms["mismatch"] += bce(wrong_c, 0.0)
            terms["loss"] += real_loss + fake_loss
        return terms

    def generator_loss(self, generated: dict, text: TextFeatures, class_ids) -> dict:
        c = self.config
        adversarial = 0.0
        for stage, images in enumerate(generated["images"]):
            _, fake_c, fake_u = self.stage_logits(stage, images, text.sentence)
            adversarial += bce(fake_u, 1.0) + bce(fake_c, 1.0)
        words, sentence = generated_image_loss(self.encoders.image, generated["images"][-1], text.words, text.mask,
                                               text.sentence, (c.gamma1, c.gamma2, c.gamma3), class_ids,
                                               self.encoders.word_scale)
        kl = kl_divergence(generated["mu"], generated["logvar"])
        loss = adversarial + c.damsm_weight * (words + sentence) + c.kl_weight * kl
        return {"loss": loss, "adversarial": adversarial, "damsm_words": words, "damsm_sentence": sentence, "kl": kl}
