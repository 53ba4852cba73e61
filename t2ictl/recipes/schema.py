"""What a recipe holds: one dataclass per section, each validating its own values.

A recipe names everything a run needs. A value out of range raises ValueError naming the key; recipes/loading.py turns
that into a user error naming the file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from t2ictl.data.sources import DATASETS
from t2ictl.models import backbones
from t2ictl.models.backbones.base import BackboneConfig

MULTI_LABEL_RULES = ("any", "exact", "jaccard")
STRATEGIES = ("default", "mirrored", "multiworker")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16", "auto")
LABEL_LOSSES = ("supcon", "unicl", "classifier")


@dataclass
class DataConfig:
    """What data a run reads and how the input pipeline shapes it."""

    dataset: str = "shapes"  # a name `t2ictl prepare` knows
    dir: str = ""  # prepared output folder; "" means data/<dataset>
    image_size: int = 64  # the largest image size the models see
    extra_sizes: list[int] = field(default_factory=list)  # smaller sizes for multi-stage models, e.g. [64, 128]
    max_words: int = 18  # tokens per caption (AttnGAN/DF-GAN TEXT.WORDS_NUM = 18)
    batch_size: int = 32  # global batch (per branch in paired mode)
    shuffle_buffer: int = 2048
    random_flip: bool = True  # horizontal flips in training (off where captions say "left"/"right", as shapes)
    random_crop: bool = True  # resize to 76/64 of the size, crop back at random (AttnGAN/DF-GAN); off where captions
    # size and place the objects (shapes): the crop zooms them and shifts them by up to 3/16 of the size

    def validate(self) -> None:
        _choice("dataset", self.dataset, DATASETS)
        _positive("image_size", self.image_size)
        _positive("max_words", self.max_words)
        _positive("batch_size", self.batch_size)
        _positive("shuffle_buffer", self.shuffle_buffer)
        for size in self.extra_sizes:
            if size <= 0 or size >= self.image_size:
                raise ValueError(f"extra_sizes: each size must be in (0, image_size={self.image_size}), got {size}")

    @property
    def path(self) -> Path:
        return Path(self.dir or f"data/{self.dataset}")


@dataclass
class ContrastiveConfig:
    """Label-guided supervised contrastive learning over two weight-sharing branches (the paper's framework).

    The paper leaves temperatures, weights and the feature pool open; the defaults are argued in recipes/README.md.
    """

    enabled: bool = True  # false gives the plain backbone in both phases: the paper's "without" column
    multi_label_rule: str = "any"  # positives for multi-hot labels: any shared label | exact label set | jaccard weight
    pretrain_temperature: float = 0.1  # SupCon tau in phase 1; 0.07 (SupCon) is tuned for batches of thousands
    pretrain_weight: float = 1.0  # added to the DAMSM loss, which sums four terms of the same scale
    pretrain_features: str = "both"  # pool of phase 1: image | text | both (image-image, text-text, image-text pairs)
    gan_temperature: float = 0.5  # phase 2, on generated-image features: Ye et al. 2021 used 0.5
    gan_weight: float = 0.2  # lambda of phase 2: Ye et al. 2021 used about 0.2
    # The label-guided loss of both phases: supcon (the paper's) | unicl (image-text pairs sharing a label, UniCL) |
    # classifier (cross-entropy of a linear label head on the same features): the paper's ablations
    loss: str = "supcon"
    gan_features: str = "generated"  # phase 2's pool: generated | generated_and_real (real images' features too)
    shared_noise: bool = False  # the two branches draw the same noise z row by row (T2I_CL does), else each its own

    def validate(self) -> None:
        for key in ("pretrain_temperature", "gan_temperature"):
            if not 0.0 < getattr(self, key) <= 10.0:
                raise ValueError(f"{key}: must be in (0, 10], got {getattr(self, key)}")
        for key in ("pretrain_weight", "gan_weight"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key}: must be >= 0, got {getattr(self, key)}")
        _choice("multi_label_rule", self.multi_label_rule, MULTI_LABEL_RULES)
        _choice("pretrain_features", self.pretrain_features, ("image", "text", "both"))
        _choice("loss", self.loss, LABEL_LOSSES)
        _choice("gan_features", self.gan_features, ("generated", "generated_and_real"))


@dataclass
class PretrainConfig:
    """Phase 1: DAMSM text and image encoders (AttnGAN defaults) plus the supervised contrastive loss."""

    epochs: int = 600  # AttnGAN pretrains DAMSM for 600 epochs on CUB
    learning_rate: float = 0.002  # AttnGAN TRAIN.ENCODER_LR
    lr_decay: float = 0.98  # multiplied in every epoch down to learning_rate / 10, as AttnGAN
    beta_1: float = 0.5
    beta_2: float = 0.999
    text_grad_clip: float = 0.25  # AttnGAN TRAIN.RNN_GRAD_CLIP (global norm, text encoder only)
    embedding_dim: int = 300
    text_dim: int = 256
    text_dropout: float = 0.5
    image_trunk: str = "inception_v3"  # inception_v3 (the paper's) | inception_v3_torchvision (AttnGAN's) | small
    image_weights: str = "imagenet"  # imagenet | none | path: Keras include_top=False .h5, or torchvision's .pth
    train_trunk: str = "auto"  # auto: train the trunk only when it has no pretrained weights | true | false
    init: str = ""  # encoders to start from (a run dir or its encoders/, e.g. `t2ictl import damsm`'s); "" = fresh
    small_trunk_width: int = 32
    gamma1: float = 4.0  # AttnGAN TRAIN.SMOOTH.GAMMA1
    gamma2: float = 5.0
    gamma3: float = 10.0
    eval_examples: int = 1000  # held-out examples for the end-of-epoch retrieval table
    eval_every: int = 1  # epochs between those evaluations and their checkpoints (the last epoch always)
    log_every: int = 20  # steps between TensorBoard scalars
    checkpoint_every: int = 200  # steps between checkpoints (and one with every evaluation)
    keep_checkpoints: int = 3

    def validate(self) -> None:
        for key in ("epochs", "embedding_dim", "text_dim", "small_trunk_width", "eval_examples", "eval_every",
                    "log_every", "checkpoint_every", "keep_checkpoints"):
            _positive(key, getattr(self, key))
        if self.text_dim % 2:
            raise ValueError(f"text_dim: must be even (two LSTM directions), got {self.text_dim}")
        if not 0 < self.learning_rate < 1 or not 0 < self.lr_decay <= 1:
            raise ValueError("learning_rate must be in (0, 1) and lr_decay in (0, 1]")
        if not 0 <= self.text_dropout < 1:
            raise ValueError(f"text_dropout: must be in [0, 1), got {self.text_dropout}")
        _choice("image_trunk", self.image_trunk, ("inception_v3", "inception_v3_torchvision", "small"))
        _choice("train_trunk", self.train_trunk, ("auto", "true", "false"))
        if self.image_trunk == "small" and self.image_weights != "none":
            raise ValueError('image_weights: the small trunk has no pretrained weights, use "none"')
        if self.image_trunk == "inception_v3_torchvision" and self.image_weights == "imagenet":
            raise ValueError('image_weights: the torchvision trunk reads torchvision\'s ImageNet weights from their '
                             'file (download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth): give its path, '
                             'or "none"')


@dataclass
class TrainConfig:
    """Phase 2: the GAN on the frozen pretrained encoders. Optimizers and losses are the backbone's ([model])."""

    epochs: int = 600
    ema_decay: float = 0.999  # exponential moving average of the generator weights, used to sample and export
    encoders: str = ""  # a pretraining run dir (or its encoders/ folder); "" = this run's, pretrained first if absent
    log_every: int = 20
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    sample_every: int = 500  # steps between sample grids (TensorBoard and run/samples/)
    sample_captions: int = 8  # held-out captions in each sample grid
    eval_every: int = 1  # epochs between end-of-epoch evaluations and their checkpoints (the last epoch always)
    # MSGAN's mode seeking term on a quarter of each batch, drawn again with new noise (0 = off, as every official
    # backbone): a generator that draws one image per caption pays weight / (image gap / noise gap)
    mode_seeking_weight: float = 0.0

    def validate(self) -> None:
        for key in ("epochs", "log_every", "checkpoint_every", "keep_checkpoints", "sample_every", "sample_captions",
                    "eval_every"):
            _positive(key, getattr(self, key))
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay: must be in [0, 1), got {self.ema_decay}")
        if not self.mode_seeking_weight >= 0:
            raise ValueError(f"mode_seeking_weight: must be zero or positive, got {self.mode_seeking_weight}")


@dataclass
class RuntimeConfig:
    """How a run executes: seed, distribution across devices and machines, numeric precision, XLA."""

    seed: int = 0
    strategy: str = "default"  # default (one device) | mirrored (all local GPUs) | multiworker (TF_CONFIG machines)
    precision: str = "float32"  # float32 | mixed_float16 (dynamic loss scaling) | mixed_bfloat16 | auto (per machine)
    xla: bool = False  # compile each replica's train step with XLA (jit_compile)

    def validate(self) -> None:
        _choice("strategy", self.strategy, STRATEGIES)
        _choice("precision", self.precision, PRECISIONS)


DEFAULT_BACKBONE = "dfgan"  # a [model] table without a backbone key


def _default_model() -> BackboneConfig:
    return backbones.config_class(DEFAULT_BACKBONE)()


@dataclass
class Recipe:
    name: str = "custom"
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    model: BackboneConfig = field(default_factory=_default_model)
    train: TrainConfig = field(default_factory=TrainConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def validate(self) -> None:
        for section in dataclasses.fields(self):
            value = getattr(self, section.name)
            if dataclasses.is_dataclass(value) and hasattr(value, "validate"):
                try:
                    value.validate()
                except ValueError as exc:
                    raise ValueError(f"{section.name}.{exc}") from None


def _choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{key}: {value!r} is not one of {', '.join(choices)}")


def _positive(key: str, value: int) -> None:
    if value <= 0:
        raise ValueError(f"{key}: must be positive, got {value}")
