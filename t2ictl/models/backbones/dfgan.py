"""DF-GAN (Tao et al., CVPR 2022): a one-stage text-to-image GAN that fuses the sentence into every generator block.

The rules, as the official code (tobran/DF-GAN: code/models/GAN.py, code/lib/modules.py, code/src/train.py) has them:
- generator: noise z [B, z_dim] -> dense -> 4x4 map of 8 nf channels; then one G block per doubling up to the image
  size, channels 8 nf while they can stay there and halving over the last blocks down to nf (64 px: 8-8-4-2-1 x nf);
  then LeakyReLU(0.2), conv3x3 to RGB, tanh. The condition of every block is concat(z, sentence).
- G block: nearest upsampling x2, then shortcut (a 1x1 conv when the channels change) + residual
  (fusion, conv3x3, fusion, conv3x3). A fusion block is two affine transforms, each followed by LeakyReLU(0.2); an
  affine transform scales and shifts every channel by gamma and beta, predicted from the condition by two 2-layer
  MLPs (linear, ReLU, linear) whose last layers start with zero weights, so gamma = 1 and beta = 0 at the start.
- discriminator: conv3x3 to nf, then D blocks halving the size and growing the channels up to 8 nf at 4x4. A D block
  returns avgpool(shortcut(x)) + gamma * residual(x), residual = conv4x4/2, LReLU, conv3x3, LReLU (no biases), the
  shortcut a 1x1 conv when the channels change, gamma a learned scalar starting at 0.
- discriminator head (the official NetC) judges an (image, sentence) pair: the 4x4 features with the sentence tiled
  over them, conv3x3 to 2 nf, LeakyReLU(0.2), conv4x4 (valid) to one logit, no biases.
- losses (hinge): D = relu(1 - D(x_i, s_i)) + (relu(1 + D(fake_i, s_i)) + relu(1 + D(x_i+1, s_i))) / 2 + MA-GP, each
  term a batch mean, the mismatched pairs rolling the real features by one (the last sentence meets the first image);
  MA-GP = k * mean_i ||(dD(x_i, s_i)/dx_i, dD(x_i, s_i)/ds_i)||^p with k = 2, p = 6. G = -mean D(fake_i, s_i).
- Adam, betas (0.0, 0.9): generator lr 1e-4, discriminator (with its head) lr 4e-4.

Differences that do not change the function: NHWC instead of NCHW, and a D block whose channels do not change has no
shortcut conv (the official one builds it and never uses it). Weights start like PyTorch's defaults (uniform within
+-1/sqrt(fan_in) for kernels and biases), the initialisation the official results were obtained with.
Under a mixed-precision policy the layers compute in float16; images, logits and losses stay float32.

Options, off by default, leave the official rules for short runs (the embedded recipes turn the first three on):
`d_gate_init` starts the D blocks' gammas elsewhere than 0; `project_condition` makes the first 4x4 map from
concat(z, sentence), as AttnGAN's first stage does, instead of from z alone; `projection_head` adds a projection
term to D's head; `augment` applies DiffAugment policies to every image D sees.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers, ops

from t2ictl import replicas
from t2ictl.errors import UserError
from t2ictl.losses.adversarial import hinge_fake, hinge_real, matching_aware_penalty
from t2ictl.losses.damsm import generated_image_loss
from t2ictl.models.backbones.base import Backbone, Encoders
from t2ictl.models.backbones.configs import DFGANConfig
from t2ictl.models.backbones.diffaugment import AUGMENTATIONS
from t2ictl.models.backbones.layers import (LEAKY_SLOPE, DiscriminatorBlock, GeneratorBlock, discriminator_widths,
                                            generator_widths, torch_conv, torch_dense)
from t2ictl.models.text_encoder import TextFeatures


class DFGAN(Backbone):
    config_class = DFGANConfig
    config: DFGANConfig
    d_width_cap = 8  # D channels grow to 8 nf (DF-GAN v1, the base of SSA-GAN, to 16 nf)

    def __init__(self, config: DFGANConfig, image_size: int, text_dim: int, max_words: int,
                 encoders: Encoders | None = None):
        super().__init__(config, image_size, text_dim, max_words, encoders)
        if image_size < 8 or image_size & (image_size - 1):
            raise UserError(f"data.image_size: DF-GAN needs a power of two of at least 8 (e.g. 64, 128, 256), "
                            f"got {image_size}")

    @property
    def noise_dim(self) -> int:
        return self.config.z_dim

    def build(self) -> None:
        self.generator = self.build_generator()
        self.discriminator = self.build_discriminator()
        self.discriminator_head = self.build_discriminator_head()
        # the same draws in every run: the backbone does not know the run's seed, and the stream is checkpointed
        self.augment_noise = tf.random.Generator.from_seed(0) if self.config.augment else None

    def build_generator(self) -> keras.Model:
        nf, condition_dim = self.config.nf, self.config.z_dim + self.text_dim
        inputs = self.generator_input_layers()  # words and mask unused: DF-GAN fuses the sentence
        condition = layers.Concatenate(name="condition")([inputs["noise"], inputs["sentence"]])
        if self.config.project_condition:
            x = torch_dense(4 * 4 * 8 * nf, condition_dim, name="project")(condition)
        else:
            x = torch_dense(4 * 4 * 8 * nf, self.config.z_dim, name="project")(inputs["noise"])
        x = layers.Reshape((4, 4, 8 * nf), name="to_4x4")(x)
        widths = generator_widths(self.image_size)
        for index, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:])):
            x = GeneratorBlock(w_in * nf, w_out * nf, condition_dim, name=f"block_{index}")(x, condition)
        x = layers.LeakyReLU(LEAKY_SLOPE, name="rgb_activation")(x)
        x = torch_conv(3, 3, widths[-1] * nf, name="to_rgb")(x)
        image = layers.Activation("tanh", dtype="float32", name="image")(x)
        return keras.Model(inputs, {"images": [image]}, name="dfgan_generator")

    def build_discriminator(self) -> keras.Model:
        """images [B, S, S, 3] -> features [B, 4, 4, 8 nf] (the official NetD)."""
        nf = self.config.nf
        images = keras.Input((self.image_size, self.image_size, 3), name="images")
        x = torch_conv(nf, 3, 3, name="from_rgb")(images)
        widths = discriminator_widths(self.image_size, self.d_width_cap)
        for index, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:])):
            x = DiscriminatorBlock(w_in * nf, w_out * nf, self.config.d_gate_init, name=f"block_{index}")(x)
        return keras.Model(images, x, name="dfgan_discriminator")

    def build_discriminator_head(self) -> keras.Model:
        """(features [B, 4, 4, 8 nf], sentence [B, D]) -> logits [B, 1] float32 (the official NetC)."""
        nf = self.config.nf
        top = discriminator_widths(self.image_size, self.d_width_cap)[-1] * nf  # 8 nf (SSA-GAN: 16 nf at 128+ px)
        features = keras.Input((4, 4, top), name="features")
        sentence = keras.Input((self.text_dim,), name="sentence")
        tiled = layers.UpSampling2D(4, name="tile_sentence")(layers.Reshape((1, 1, self.text_dim))(sentence))
        joint = layers.Concatenate(name="joint")([features, tiled])
        x = torch_conv(2 * nf, 3, top + self.text_dim, use_bias=False, name="joint_conv")(joint)
        x = layers.LeakyReLU(LEAKY_SLOPE)(x)
        x = torch_conv(1, 4, 2 * nf, padding="valid", use_bias=False, name="to_logit")(x)
        if self.config.projection_head:
            embedded = torch_dense(top, self.text_dim, use_bias=False, name="project_sentence")(sentence)
            x = layers.Add()([x, ProjectionTerm(name="projection")(features, embedded)])
        logits = layers.Flatten(dtype="float32", name="logits")(x)
        return keras.Model([features, sentence], logits, name="dfgan_discriminator_head")

    @property
    def discriminator_variables(self) -> list:
        return self.discriminator.trainable_variables + self.discriminator_head.trainable_variables

    def trackables(self) -> dict:
        models = {"generator": self.generator, "discriminator": self.discriminator,
                  "discriminator_head": self.discriminator_head}
        return models | ({"augment_noise": self.augment_noise} if self.augment_noise is not None else {})

    def augmented(self, images) -> tf.Tensor:
        for policy in self.config.augment:
            images = AUGMENTATIONS[policy](images, self.augment_noise)
        return images

    def judge(self, features, sentence) -> tf.Tensor:
        """Logits [B, 1] float32 of (image features, sentence) pairs."""
        return ops.cast(self.discriminator_head([features, sentence], training=True), "float32")

    def discriminator_loss(self, real: dict[int, tf.Tensor], fake: list[tf.Tensor], text: TextFeatures) -> dict:
        images, sentence = self.augmented(real[self.image_size]), text.sentence
        with tf.GradientTape(watch_accessed_variables=False) as input_tape:
            input_tape.watch([images, sentence])
            real_features = self.discriminator(images, training=True)
            real_logits = self.judge(real_features, sentence)
        # d(sum of logits) per input = each pair's own gradient: a pair's logit depends on its image and sentence only
        image_grads, sentence_grads = input_tape.gradient(real_logits, [images, sentence])
        penalty = matching_aware_penalty(image_grads, sentence_grads, self.config.gp_weight, self.config.gp_power)
        mismatched_logits = self.mismatched_logits(real_features, sentence)
        fake_logits = self.judge(self.discriminator(self.augmented(fake[-1]), training=True), sentence)
        terms = {"real": hinge_real(real_logits), "fake": hinge_fake(fake_logits),
                 "mismatch": hinge_fake(mismatched_logits), "ma_gp": penalty}
        terms["loss"] = terms["real"] + (terms["fake"] + terms["mismatch"]) / 2.0 + terms["ma_gp"]
        return terms

    def mismatched_logits(self, real_features, sentence) -> tf.Tensor:
        """Logits of real images paired with another example's sentence: image i+1 with sentence i, all B pairs."""
        return self.judge(replicas.roll(real_features, -1, self.batch_blocks), sentence)

    @property
    def uses_image_encoder(self) -> bool:
        return self.config.damsm_weight > 0

    def generator_loss(self, generated: dict, text: TextFeatures, class_ids) -> dict:
        c = self.config
        logits = self.judge(self.discriminator(self.augmented(generated["images"][-1]), training=True), text.sentence)
        adversarial = -ops.mean(logits)
        if not c.damsm_weight > 0:
            return {"loss": adversarial}
        words, sentence = generated_image_loss(self.encoders.image, generated["images"][-1], text.words, text.mask,
                                               text.sentence, (c.gamma1, c.gamma2, c.gamma3), class_ids,
                                               self.encoders.word_scale)
        return {"loss": adversarial + c.damsm_weight * (words + sentence), "adversarial": adversarial,
                "damsm_words": words, "damsm_sentence": sentence}


class ProjectionTerm(layers.Layer):
    """[B, 1, 1, 1]: the mean over positions of <features, embedded sentence>."""

    def call(self, features, embedded):
        return ops.mean(features * embedded[:, None, None, :], axis=(1, 2, 3), keepdims=True) * features.shape[-1]
