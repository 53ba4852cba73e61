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

from dataclasses import dataclass, field

import keras
import tensorflow as tf
from keras import layers, ops

from t2ictl import replicas
from t2ictl.errors import UserError
from t2ictl.losses.adversarial import hinge_fake, hinge_real, matching_aware_penalty
from t2ictl.losses.damsm import generated_image_loss
from t2ictl.models.backbones.base import Backbone, BackboneConfig, Encoders
from t2ictl.models.backbones.diffaugment import AUGMENTATIONS
from t2ictl.models.backbones.layers import (LEAKY_SLOPE, DiscriminatorBlock, GeneratorBlock, discriminator_widths,
                                            generator_widths, torch_conv, torch_dense)
from t2ictl.models.text_encoder import TextFeatures


@dataclass
class DFGANConfig(BackboneConfig):
    backbone: str = "dfgan"
    nf: int = 32  # base channel width of G and D (cfg/bird.yml, cfg/coco.yml: nf: 32)
    z_dim: int = 100  # noise size (cfg/*.yml: z_dim: 100)
    g_lr: float = 1e-4  # src/train.py: Adam(netG, lr=0.0001, betas=(0.0, 0.9))
    d_lr: float = 4e-4  # src/train.py: Adam(netD + netC, lr=0.0004, betas=(0.0, 0.9))
    beta_1: float = 0.0  # src/train.py betas[0], both optimizers
    beta_2: float = 0.9  # src/train.py betas[1], both optimizers
    gp_weight: float = 2.0  # lib/modules.py MA_GP: 2.0 * mean(norm ** 6)
    gp_power: float = 6.0  # lib/modules.py MA_GP: the exponent 6
    # lib/modules.py D_Block: gamma = zeros(1), so D's body starts as an affine map of the image (RGB conv, 1x1
    # shortcuts, average pools) that sees pooled colour and place but not shape, and in a 3,000-step run the gammas
    # only reach about 0.1; the shapes recipe starts them at 1.0 (BENCHMARKS.md)
    d_gate_init: float = 0.0
    # model.py NetG: fc(noise) makes the first 4x4 map, so the sentence acts only through channel-wise affines; true
    # makes it from concat(noise, sentence), as AttnGAN's first stage does (the shapes recipe, BENCHMARKS.md)
    project_condition: bool = False
    # model.py NetC: concat(features, sentence) -> convs; true adds a projection term (Miyato and Koyama 2018), the
    # mean over the 4x4 map of <features, W sentence>, a bilinear check of the image against the sentence
    projection_head: bool = False
    # DiffAugment (Zhao et al. 2020) policies applied to every image the discriminator sees, real and generated alike:
    # "translation" (shift by up to 1/8 of the size, zero padded), "cutout" (a zeroed square of half the size)
    augment: list[str] = field(default_factory=list)
    # AttnGAN's DAMSM loss on the generated images (word and sentence terms through the frozen pretrained encoders,
    # miscc/losses.py words_loss + sent_loss), which DF-GAN drops and SSA-GAN keeps at 0.05
    damsm_weight: float = 0.0
    gamma1: float = 5.0  # SSA-GAN miscc/config.py TRAIN.SMOOTH.GAMMA1, as AttnGAN's bird.yml
    gamma2: float = 5.0
    gamma3: float = 10.0
    # the options above that leave the official rules: an import of an official file puts them back at their defaults
    departures = ("d_gate_init", "project_condition", "projection_head", "augment", "damsm_weight")

    def validate(self) -> None:
        for key in ("nf", "z_dim"):
            value = getattr(self, key)
            if value <= 0:
                raise ValueError(f"{key}: must be a positive integer, got {value}")
        for key in ("g_lr", "d_lr", "gp_power"):
            value = getattr(self, key)
            if not value > 0:
                raise ValueError(f"{key}: must be positive, got {value}")
        for key in ("beta_1", "beta_2"):
            value = getattr(self, key)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{key}: must be in [0, 1), got {value}")
        unknown = set(self.augment) - set(AUGMENTATIONS)
        if unknown:
            raise ValueError(f"augment: unknown {sorted(unknown)}, choose from {list(AUGMENTATIONS)}")
        for key in ("gp_weight", "damsm_weight"):
            if not getattr(self, key) >= 0:
                raise ValueError(f"{key}: must be zero or positive, got {getattr(self, key)}")
        for key in ("gamma1", "gamma2", "gamma3"):
            if not getattr(self, key) > 0:
                raise ValueError(f"{key}: must be positive, got {getattr(self, key)}")


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
