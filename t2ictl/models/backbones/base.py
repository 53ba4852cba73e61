"""The small interface through which a GAN architecture plugs into training, sampling and export.

A backbone builds its generator and discriminator(s), names its optimizers' settings, and says how its losses are
computed. It knows nothing of the contrastive framework: the GAN phase (t2ictl/training/gan.py) runs it on the merged
batch of both branches, builds its optimizers and adds the supervised contrastive term to the generator loss.

Conventions shared by every backbone:
- text features come from the frozen pretrained text encoder: `TextFeatures(words [B,T,D], sentence [B,D], mask [B,T])`
  with mask 1.0 at real tokens and 0.0 at padding;
- images are float [-1, 1], NHWC; `real` maps each image size the backbone uses to a [B,S,S,3] batch (the pipeline gives
  the recipe's data.image_size and data.extra_sizes);
- the generator is a keras.Model called as `generator({"noise", "words", "sentence", "mask"}, training=...)` that
  returns a dict with "images": the images of every stage, smallest first, the last one at data.image_size, plus any
  auxiliary outputs its loss needs (AttnGAN: "mu", "logvar" of conditioning augmentation). All randomness of the
  generator comes from "noise" [B, noise_dim] (AttnGAN's CA epsilon is part of it), so the same noise gives the same
  images: sampling and export are reproducible from a seed;
- a loss dict always has the key "loss" (what the optimizer minimises), other keys are reported as they are;
- the batch is `batch_blocks` blocks stacked along the rows (the GAN phase sets 2 when it merges two branches);
  terms that pair rows with other rows (mismatched sentences, in-batch negatives) go through t2ictl.replicas with it,
  and batch norms are synchronised, so that the losses are those of one device on any number of replicas.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the recipe loader imports this module; TensorFlow is loaded by the backbones themselves
    import keras
    import tensorflow as tf

    from t2ictl.data.vocab import Vocabulary
    from t2ictl.models.text_encoder import TextFeatures


@dataclass
class BackboneConfig:
    """Base of every backbone's recipe section `[model]`; `backbone` picks the class from the registry."""

    backbone: str = "dfgan"

    def validate(self) -> None:
        pass

    def image_sizes(self, image_size: int) -> list[int]:
        """The image sizes the backbone trains on (AttnGAN: 64, 128, 256); the pipeline must provide them."""
        return [image_size]


@dataclass(frozen=True)
class AdamSettings:
    learning_rate: float
    beta_1: float
    beta_2: float
    epsilon: float = 1e-8  # PyTorch's Adam default, which every official backbone trains with


@dataclass
class Encoders:
    """The frozen pretrained encoders, for backbones whose losses use them (AttnGAN's DAMSM loss)."""

    text: keras.Model
    image: keras.Model | None  # None when only a text encoder was imported
    word_scale: float = 1.0  # the text encoder's calibration of word features (encoders.json), 1.0 if uncalibrated
    vocab: Vocabulary | None = None  # the text encoder's vocabulary


class Backbone(abc.ABC):
    config_class: type[BackboneConfig] = BackboneConfig
    uses_image_encoder = False  # its losses read generated images with the DAMSM image encoder
    has_image_embedding = False  # it holds a frozen image encoder of its own (GALIP: CLIP's ViT), see image_embedding
    batch_blocks = 1  # blocks of rows in the batch its losses see (module docstring)

    def __init__(self, config: BackboneConfig, image_size: int, text_dim: int, max_words: int,
                 encoders: Encoders | None = None):
        self.config = config
        self.image_size = image_size
        self.text_dim = text_dim
        self.max_words = max_words
        self.encoders = encoders

    @property
    @abc.abstractmethod
    def noise_dim(self) -> int:
        """Size of the generator's noise input, known from the config (before build)."""

    generator: keras.Model

    @abc.abstractmethod
    def build(self) -> None:
        """Create self.generator (with build_generator) and the discriminator(s)."""

    def optimizer_settings(self) -> tuple[AdamSettings, AdamSettings]:
        """Adam for the generator and for the discriminators (the GAN phase builds both), from the config's g_lr,
        d_lr, beta_1 and beta_2; a backbone whose config names them otherwise overrides this."""
        c = self.config
        return AdamSettings(c.g_lr, c.beta_1, c.beta_2), AdamSettings(c.d_lr, c.beta_1, c.beta_2)

    def image_embedding(self, images) -> tf.Tensor:
        """[B, E] float32 embedding of images by the backbone's own frozen image encoder (has_image_embedding)."""
        raise NotImplementedError(f"{type(self).__name__} has no image encoder of its own")

    @abc.abstractmethod
    def build_generator(self) -> keras.Model:
        """A new generator with fresh weights (the GAN phase also uses it for the EMA copy)."""

    def generator_input_layers(self) -> dict:
        """The generator's symbolic inputs, keyed as TextFeatures.generator_inputs; a backbone may leave some unused."""
        import keras

        return {
            "noise": keras.Input((self.noise_dim,), name="noise"),
            "words": keras.Input((self.max_words, self.text_dim), name="words"),
            "sentence": keras.Input((self.text_dim,), name="sentence"),
            "mask": keras.Input((self.max_words,), name="mask"),
        }

    @property
    @abc.abstractmethod
    def discriminator_variables(self) -> list:
        """Trainable variables of every discriminator (and their heads)."""

    @abc.abstractmethod
    def trackables(self) -> dict:
        """Models to checkpoint (the generator, every discriminator and head)."""

    @abc.abstractmethod
    def discriminator_loss(self, real: dict[int, tf.Tensor], fake: list[tf.Tensor], text: TextFeatures) -> dict:
        """Discriminator loss terms; `fake` is already cut from the generator's graph."""

    @abc.abstractmethod
    def generator_loss(self, generated: dict, text: TextFeatures, class_ids) -> dict:
        """Generator loss terms (adversarial, and DAMSM / KL where the backbone has them); `generated` is the
        generator's output dict. class_ids [B] int (-1: none) is for DAMSM's same-class masking."""
