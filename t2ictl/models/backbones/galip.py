"""GALIP (Tao et al., CVPR 2023): a text-to-image GAN built around a frozen CLIP image encoder (ViT).

The rules, as the official code (tobran/GALIP: code/models/GALIP.py, code/lib/modules.py, code/src/train.py,
code/cfg/*.yml) has them:
- generator: noise z -> dense -> a g x g map (g = the ViT's patch grid, 7 for ViT-B/32) of 64 channels; four mapper
  blocks, each shortcut + (conv3x3 to 32, fusion, conv3x3 to 64, fusion), conditioned on concat(z, sentence);
  conv5x5 to the ViT width; the frozen ViT's blocks run on that map (in place of its patch embedding), with one
  prompt token per block 1..8 predicted from the condition by a dense layer (the bridge); the map plus 0.1 x the
  ViT's output goes through conv5x5 to 8 nf channels. Then DF-GAN's G blocks (nearest resize, shortcut + fusion,
  conv3x3, fusion, conv3x3), channels 8 nf down to nf, and LeakyReLU(0.2), conv3x3 to RGB. A fusion block is DF-GAN's
  (two affine transforms, each followed by LeakyReLU(0.2)).
- discriminator: the frozen ViT's patch tokens of the image after blocks 1, 4 and 8 (as g x g maps). A D block is
  x + gamma * (conv3x3, LReLU, conv3x3, LReLU)(x) (no biases) + beta * (the next CLIP map), gamma and beta learned
  scalars from 0; two such blocks fold in the later maps, a last one (no CLIP map, a 1x1 shortcut conv) goes to
  8 nf channels. The head tiles the sentence over the map: conv4x4 (valid) to 2 nf, LReLU(0.2), a valid conv to one
  logit, no biases.
- losses (hinge): D = relu(1 - D(x_i, s_i)) + (relu(1 + D(fake_i, s_i)) + relu(1 + D(x_i, s_i+1))) / 2 + MA-GP, the
  mismatched pairs rolling the sentences by one; MA-GP = 2 * mean ||(dD/dCLIP features of x_i, dD/ds_i)||^6 (the
  gradient is taken at the CLIP features, not at the pixels). G = -mean D(fake_i, s_i) - 4 * mean cos(CLIP
  embedding of fake_i, sentence_i).
- Adam, betas (0.0, 0.9): generator lr 1e-4, discriminator (with its head) lr 4e-4; nf 64, z 100 (cfg/birds.yml,
  cfg/coco.yml).

Adaptations to this project:
- Text: GALIP conditions on CLIP's sentence embedding; here the sentence comes from the project's frozen pretrained
  text encoder (`text.sentence`), used where GALIP uses the CLIP sentence (the generator's condition and the head).
- The CLIP text-image similarity needs CLIP's text tower, which needs captions this interface does not carry. It is
  replaced by the cosine between the CLIP embedding of the fake and a learned dense projection of the sentence into
  CLIP's embedding space. The projection is trained in the discriminator step with a symmetric InfoNCE loss between
  the CLIP embeddings of the real images and the projected sentences (temperature = CLIP's initial 0.07), so that
  it plays the part of CLIP's text tower; the generator cannot move it. The term is reported as "align".
- The official last G block resizes to 224 (CLIP's input size, for 256-px data); here every block doubles up to
  data.image_size, so that generated and real images have the same size. The ViT resizes every image to its input
  size itself (bilinear; the official code resizes with nearest neighbours, and its CLIP_IMG_ENCODER maps [-1, 1] to
  [0, 1] twice before CLIP's normalisation, here once). The official RGB conv has no output activation; tanh keeps
  the images in [-1, 1].
- The official D maps 768 -> 512 channels and its head 1024 -> 128 -> 1 with a 4x4 last kernel (for a 7 x 7 grid);
  here 8 nf and 2 nf (the same at nf = 64) and a (g - 3) x (g - 3) last kernel (4 x 4 at g = 7).
- Block numbers are ViT-B/32's (12 blocks); a ViT with L blocks uses block floor(i * L / 12) for block i.
- The official choices are recipe switches, which `t2ictl import galip` turns on: `clip_text` (the text encoder is
  CLIP's text tower: its sentence is the CLIP text embedding, no projection), `final_size = 224`, `rgb_tanh = false`,
  `clip_input = "official"`. At nf = 64 the D and head widths are the official 512 and 128.
Weights of trainable layers start like PyTorch's defaults, as in the DF-GAN module. Under a mixed-precision policy the
layers compute in float16; images, logits and losses stay float32. The ViT is frozen, loaded once per backbone from
`model.clip` and shared by the generator, its EMA copy and the discriminator; its weights are not among the
generator's Keras weights (so the EMA update leaves them alone) but TensorFlow tracks them, so that checkpoints and
SavedModels of the generator hold them. The losses are computed separately (the training loop asks for them one
after the other), so the ViT encodes the fakes once for D and once for G where the official step does it once.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers, ops

from t2ictl import replicas
from t2ictl.errors import UserError
from t2ictl.losses.adversarial import hinge_fake, hinge_real, matching_aware_penalty
from t2ictl.models.backbones.base import Backbone, Encoders
from t2ictl.models.backbones.configs import GALIPConfig
from t2ictl.models.backbones.layers import (LEAKY_SLOPE, FusionBlock, GeneratorBlock, channel_shortcut,
                                            generator_widths, torch_conv, torch_dense)
from t2ictl.models.text_encoder import TextFeatures
from t2ictl.models.clip import CLIP_MEAN, CLIP_STD, ClipVision, load_clip_vision

PROMPT_BLOCKS = (1, 2, 3, 4, 5, 6, 7, 8)  # models/GALIP.py CLIP_Mapper: selected = [1..8] of 12
FEATURE_BLOCKS = (1, 4, 8)  # models/GALIP.py CLIP_IMG_ENCODER: selected = [1, 4, 8] of 12
BRIDGE_SCALE = 0.1  # models/GALIP.py CLIP_Adapter: conv(fuse_feat + 0.1 * map_feat)


def scaled_blocks(blocks: tuple[int, ...], layers_count: int) -> list[int]:
    """ViT-B/32 block numbers (of 12) as blocks of a ViT with `layers_count` blocks, duplicates dropped."""
    return sorted({index * layers_count // 12 for index in blocks})


class NearestResize(layers.Layer):
    """PyTorch's F.interpolate(mode="nearest") to size x size: output pixel i reads input pixel floor(i * in / out)."""

    def __init__(self, size: int, **kwargs):
        super().__init__(**kwargs)
        self.size = size

    def call(self, features):
        height, width = features.shape[1], features.shape[2]
        rows = [i * height // self.size for i in range(self.size)]
        cols = [i * width // self.size for i in range(self.size)]
        return ops.take(ops.take(features, rows, axis=1), cols, axis=2)

    def compute_output_shape(self, features_shape):
        return (features_shape[0], self.size, self.size, features_shape[3])


class ResizingGeneratorBlock(GeneratorBlock):
    """DF-GAN's G block with the resize to a given size (GALIP's first block goes from the 7 x 7 grid to 8 x 8)."""

    def __init__(self, in_channels: int, out_channels: int, condition_dim: int, size: int, **kwargs):
        super().__init__(in_channels, out_channels, condition_dim, **kwargs)
        self.size = size
        self.upsample = NearestResize(size, name="upsample")

    def upsampled_shape(self, features_shape) -> tuple:
        return (features_shape[0], self.size, self.size, self.in_channels)


class MapperBlock(layers.Layer):
    """GALIP's M block: shortcut + (conv3x3 to mid, fusion, conv3x3 to out, fusion), the size kept."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, condition_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.in_channels, self.mid_channels, self.out_channels = in_channels, mid_channels, out_channels
        self.conv_1 = torch_conv(mid_channels, 3, in_channels, name="conv_1")
        self.fuse_1 = FusionBlock(mid_channels, condition_dim, name="fuse_1")
        self.conv_2 = torch_conv(out_channels, 3, mid_channels, name="conv_2")
        self.fuse_2 = FusionBlock(out_channels, condition_dim, name="fuse_2")
        self.shortcut = channel_shortcut(in_channels, out_channels)

    def build(self, features_shape, condition_shape):
        mid = tuple(features_shape[:3]) + (self.mid_channels,)
        out = tuple(features_shape[:3]) + (self.out_channels,)
        self.conv_1.build(features_shape)
        self.fuse_1.build(mid, condition_shape)
        self.conv_2.build(mid)
        self.fuse_2.build(out, condition_shape)
        if self.shortcut is not None:
            self.shortcut.build(features_shape)

    def call(self, features, condition):
        h = self.fuse_1(self.conv_1(features), condition)
        h = self.fuse_2(self.conv_2(h), condition)
        return (features if self.shortcut is None else self.shortcut(features)) + h


class ClipBridge(layers.Layer):
    """features + 0.1 x (the frozen ViT's blocks run on the features, with prompts); GALIP's CLIP mapping."""

    def __init__(self, vision: ClipVision, prompt_blocks: list[int], **kwargs):
        super().__init__(**kwargs)
        # a bound method, which Keras does not track: the ViT's weights stay out of the generator's (Keras) weights,
        # so that the EMA update never touches them ...
        self.map_with_clip = vision.map
        # ... while TensorFlow tracks its variables, so that a SavedModel of the generator (`t2ictl export`) holds them
        self.clip_variables = tf.Module(name="frozen_clip")
        self.clip_variables.values = [weight.value for weight in vision.weights]
        self.prompt_blocks = prompt_blocks

    def call(self, features, prompts):
        mapped = self.map_with_clip(features, prompts, self.prompt_blocks)
        return features + BRIDGE_SCALE * ops.cast(mapped, features.dtype)

    def compute_output_shape(self, features_shape, prompts_shape):
        return features_shape


class ClipDiscriminatorBlock(layers.Layer):
    """x' + gamma * (conv3x3, LReLU, conv3x3, LReLU)(x) [+ beta * clip_map], x' = x or a 1x1 conv of it."""

    def __init__(self, in_channels: int, out_channels: int, takes_clip_map: bool, **kwargs):
        super().__init__(**kwargs)
        self.in_channels, self.out_channels, self.takes_clip_map = in_channels, out_channels, takes_clip_map
        self.conv_1 = torch_conv(out_channels, 3, in_channels, use_bias=False, name="conv_1")
        self.conv_2 = torch_conv(out_channels, 3, out_channels, use_bias=False, name="conv_2")
        self.shortcut = channel_shortcut(in_channels, out_channels)

    def build(self, features_shape, clip_map_shape=None):
        self.gamma = self.add_weight(shape=(), initializer="zeros", name="gamma")
        if self.takes_clip_map:
            self.beta = self.add_weight(shape=(), initializer="zeros", name="beta")
        out = tuple(features_shape[:3]) + (self.out_channels,)
        self.conv_1.build(features_shape)
        self.conv_2.build(out)
        if self.shortcut is not None:
            self.shortcut.build(features_shape)

    def call(self, features, clip_map=None):
        h = ops.leaky_relu(self.conv_1(features), LEAKY_SLOPE)
        h = ops.leaky_relu(self.conv_2(h), LEAKY_SLOPE)
        skip = features if self.shortcut is None else self.shortcut(features)
        out = skip + ops.cast(self.gamma, h.dtype) * h
        if self.takes_clip_map:
            out = out + ops.cast(self.beta, h.dtype) * ops.cast(clip_map, h.dtype)
        return out


def cosine(a, b) -> tf.Tensor:
    """Row-wise cosine similarity [B] of two [B, E] batches, in float32."""
    a = tf.math.l2_normalize(ops.cast(a, "float32"), axis=-1)
    b = tf.math.l2_normalize(ops.cast(b, "float32"), axis=-1)
    return ops.sum(a * b, axis=-1)


def symmetric_info_nce(image_embeddings, text_embeddings, temperature: float) -> tf.Tensor:
    """CLIP's contrastive loss: cross-entropy of each image over the batch's texts and of each text over the images,
    on cosine / temperature, the matching pair being the target; the mean of both directions."""
    images = tf.math.l2_normalize(ops.cast(image_embeddings, "float32"), axis=-1)
    texts = tf.math.l2_normalize(ops.cast(text_embeddings, "float32"), axis=-1)
    logits = ops.matmul(images, ops.transpose(texts)) / temperature
    targets = ops.arange(ops.shape(logits)[0])
    image_to_text = keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)
    text_to_image = keras.losses.sparse_categorical_crossentropy(targets, ops.transpose(logits), from_logits=True)
    return (ops.mean(image_to_text) + ops.mean(text_to_image)) / 2.0


class GALIP(Backbone):
    config_class = GALIPConfig
    config: GALIPConfig
    has_image_embedding = True  # CLIP's

    def __init__(self, config: GALIPConfig, image_size: int, text_dim: int, max_words: int,
                 encoders: Encoders | None = None):
        super().__init__(config, image_size, text_dim, max_words, encoders)
        if image_size < 8 or image_size & (image_size - 1):
            raise UserError(f"data.image_size: GALIP needs a power of two of at least 8 (e.g. 64, 128, 256), "
                            f"got {image_size}")
        self._vision: ClipVision | None = None

    @property
    def noise_dim(self) -> int:
        return self.config.z_dim

    @property
    def vision(self) -> ClipVision:
        """The frozen CLIP ViT, loaded on first use and shared by every model of the backbone."""
        if self._vision is None:
            vision = load_clip_vision(self.config.clip)
            grid, count = vision.spec.grid, len(scaled_blocks(FEATURE_BLOCKS, vision.spec.layers))
            if grid < 4 or grid > 8 or count < len(FEATURE_BLOCKS):
                raise UserError(f"model.clip = {self.config.clip!r}: GALIP needs a ViT with a patch grid of 4 to 8 "
                                f"and at least 3 blocks, this one has a {grid} x {grid} grid and "
                                f"{vision.spec.layers} blocks")
            self._vision = vision
        return self._vision

    def build(self) -> None:
        self.generator = self.build_generator()
        self.discriminator = self.build_discriminator()
        self.discriminator_head = self.build_discriminator_head()
        self.sentence_projection = None if self.config.clip_text else self.build_sentence_projection()

    def build_generator(self) -> keras.Model:
        c, spec = self.config, self.vision.spec
        condition_dim = c.z_dim + self.text_dim
        prompt_blocks = scaled_blocks(PROMPT_BLOCKS, spec.layers)
        inputs = self.generator_input_layers()  # words and mask unused: GALIP takes the sentence
        condition = layers.Concatenate(name="condition")([inputs["noise"], inputs["sentence"]])
        x = torch_dense(spec.grid * spec.grid * c.mapper_channels, c.z_dim, name="project")(inputs["noise"])
        x = layers.Reshape((spec.grid, spec.grid, c.mapper_channels), name="to_grid")(x)
        for index in range(c.mapper_blocks):
            x = MapperBlock(c.mapper_channels, c.mapper_mid_channels, c.mapper_channels, condition_dim,
                            name=f"mapper_block_{index}")(x, condition)
        x = torch_conv(spec.width, 5, c.mapper_channels, name="to_clip")(x)
        prompts = torch_dense(len(prompt_blocks) * spec.width, condition_dim, name="prompts")(condition)
        prompts = layers.Reshape((len(prompt_blocks), spec.width), name="prompt_tokens")(prompts)
        x = ClipBridge(self.vision, prompt_blocks, name="clip_bridge")(x, prompts)
        x = torch_conv(8 * c.nf, 5, spec.width, name="from_clip")(x)
        widths = generator_widths(self.image_size)
        for index, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:])):
            size = c.final_size if c.final_size and index == len(widths) - 2 else 2 ** (index + 3)
            x = ResizingGeneratorBlock(w_in * c.nf, w_out * c.nf, condition_dim, size, name=f"block_{index}")(
                x, condition)
        x = layers.LeakyReLU(LEAKY_SLOPE, name="rgb_activation")(x)
        x = torch_conv(3, 3, widths[-1] * c.nf, name="to_rgb")(x)
        image = layers.Activation("tanh" if c.rgb_tanh else "linear", dtype="float32", name="image")(x)
        return keras.Model(inputs, {"images": [image]}, name="galip_generator")

    def build_discriminator(self) -> keras.Model:
        """CLIP maps [B, 3, g, g, W] (blocks 1, 4, 8) -> features [B, g, g, 8 nf] (the official NetD)."""
        spec, nf = self.vision.spec, self.config.nf
        maps = keras.Input((len(FEATURE_BLOCKS), spec.grid, spec.grid, spec.width), name="clip_maps")
        x = maps[:, 0]
        for index in range(1, len(FEATURE_BLOCKS)):
            x = ClipDiscriminatorBlock(spec.width, spec.width, True, name=f"block_{index - 1}")(x, maps[:, index])
        x = ClipDiscriminatorBlock(spec.width, 8 * nf, False, name="main")(x)
        return keras.Model(maps, x, name="galip_discriminator")

    def build_discriminator_head(self) -> keras.Model:
        """(features [B, g, g, 8 nf], sentence [B, D]) -> logits [B, 1] float32 (the official NetC)."""
        grid, nf = self.vision.spec.grid, self.config.nf
        features = keras.Input((grid, grid, 8 * nf), name="features")
        sentence = keras.Input((self.text_dim,), name="sentence")
        tiled = layers.UpSampling2D(grid, name="tile_sentence")(layers.Reshape((1, 1, self.text_dim))(sentence))
        joint = layers.Concatenate(name="joint")([features, tiled])
        x = torch_conv(2 * nf, 4, 8 * nf + self.text_dim, padding="valid", use_bias=False, name="joint_conv")(joint)
        x = layers.LeakyReLU(LEAKY_SLOPE)(x)
        x = torch_conv(1, grid - 3, 2 * nf, padding="valid", use_bias=False, name="to_logit")(x)
        logits = layers.Flatten(dtype="float32", name="logits")(x)
        return keras.Model([features, sentence], logits, name="galip_discriminator_head")

    def build_sentence_projection(self) -> keras.Model:
        """sentence [B, D] -> CLIP's embedding space [B, E], in place of CLIP's text tower (see the docstring)."""
        sentence = keras.Input((self.text_dim,), name="sentence")
        projected = torch_dense(self.vision.spec.embed_dim, self.text_dim, name="sentence_to_clip")(sentence)
        return keras.Model(sentence, layers.Activation("linear", dtype="float32", name="embedding")(projected),
                           name="galip_sentence_projection")

    @property
    def discriminator_variables(self) -> list:
        projection = [] if self.sentence_projection is None else self.sentence_projection.trainable_variables
        return self.discriminator.trainable_variables + self.discriminator_head.trainable_variables + projection

    def trackables(self) -> dict:
        out = {"generator": self.generator, "discriminator": self.discriminator,
               "discriminator_head": self.discriminator_head}
        return out | ({} if self.sentence_projection is None else {"sentence_projection": self.sentence_projection})

    def clip_features(self, images) -> tuple[tf.Tensor, tf.Tensor]:
        """(CLIP maps after blocks 1, 4, 8 [B, 3, g, g, W], CLIP embedding [B, E]), float32."""
        blocks = scaled_blocks(FEATURE_BLOCKS, self.vision.spec.layers)
        if self.config.clip_input == "official":
            maps, embedding = self.vision.encode_pixels(self.official_clip_pixels(images), blocks)
        else:
            maps, embedding = self.vision.encode(images, blocks)
        return ops.cast(ops.stack(maps, axis=1), "float32"), ops.cast(embedding, "float32")

    def image_embedding(self, images) -> tf.Tensor:
        return self.clip_features(images)[1]

    def official_clip_pixels(self, images) -> tf.Tensor:
        """CLIP_IMG_ENCODER.transf_to_CLIP_input: x / 2 + 1/2, nearest resize to the ViT's size, then (x + 1) / 2
        normalised with CLIP's mean and deviation (the official code maps [-1, 1] to [0, 1] twice)."""
        size = self.vision.spec.image_size
        x = NearestResize(size)(ops.cast(images, "float32") * 0.5 + 0.5)
        return ((x + 1.0) * 0.5 - tf.constant(CLIP_MEAN)) / tf.constant(CLIP_STD)

    def sentence_in_clip(self, sentence) -> tf.Tensor:
        """The sentence in CLIP's embedding space: itself from CLIP's text tower, else through the projection."""
        if self.sentence_projection is None:
            return ops.cast(sentence, "float32")
        return self.sentence_projection(sentence, training=True)

    def judge(self, features, sentence) -> tf.Tensor:
        """Logits [B, 1] float32 of (D features, sentence) pairs."""
        return ops.cast(self.discriminator_head([features, sentence], training=True), "float32")

    def discriminator_loss(self, real: dict[int, tf.Tensor], fake: list[tf.Tensor], text: TextFeatures) -> dict:
        sentence = text.sentence
        real_maps, real_embedding = self.clip_features(real[self.image_size])
        fake_maps, _ = self.clip_features(fake[-1])
        with tf.GradientTape(watch_accessed_variables=False) as input_tape:
            input_tape.watch([real_maps, sentence])
            real_features = self.discriminator(real_maps, training=True)
            real_logits = self.judge(real_features, sentence)
        # d(sum of logits) per input = each pair's own gradient: a pair's logit depends on its maps and sentence only
        map_grads, sentence_grads = input_tape.gradient(real_logits, [real_maps, sentence])
        penalty = matching_aware_penalty(map_grads, sentence_grads, self.config.gp_weight, self.config.gp_power)
        mismatched_logits = self.judge(real_features, replicas.roll(sentence, -1, self.batch_blocks))
        fake_logits = self.judge(self.discriminator(fake_maps, training=True), sentence)
        terms = {"real": hinge_real(real_logits), "fake": hinge_fake(fake_logits),
                 "mismatch": hinge_fake(mismatched_logits), "ma_gp": penalty}
        terms["loss"] = terms["real"] + (terms["fake"] + terms["mismatch"]) / 2.0 + terms["ma_gp"]
        if self.sentence_projection is not None:  # trained to stand in for CLIP's text tower
            terms["align"] = symmetric_info_nce(replicas.gather(real_embedding, self.batch_blocks),
                                                replicas.gather(self.sentence_in_clip(sentence), self.batch_blocks),
                                                self.config.align_temperature)
            terms["loss"] += terms["align"]
        return terms

    def generator_loss(self, generated: dict, text: TextFeatures, class_ids) -> dict:
        maps, embedding = self.clip_features(generated["images"][-1])
        logits = self.judge(self.discriminator(maps, training=True), text.sentence)
        similarity = ops.mean(cosine(embedding, self.sentence_in_clip(text.sentence)))
        adversarial = -ops.mean(logits)
        return {"loss": adversarial - self.config.sim_weight * similarity, "adversarial": adversarial,
                "clip_sim": similarity}
