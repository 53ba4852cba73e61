"""Recipes: TOML files loaded into dataclasses, validated at the border, overridable with `--set section.key=value`.

A recipe names everything a run needs. Each section is a dataclass; a key the dataclass does not have, a value of the
wrong type or out of range is an error that names the key and the file.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from t2ictl.data.sources import DATASETS
from t2ictl.errors import UserError
from t2ictl.models import backbones
from t2ictl.models.backbones.base import BackboneConfig

MULTI_LABEL_RULES = ("any", "exact", "jaccard")
STRATEGIES = ("default", "mirrored", "multiworker")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16", "auto")


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

    def validate(self) -> None:
        for key in ("pretrain_temperature", "gan_temperature"):
            if not 0.0 < getattr(self, key) <= 10.0:
                raise ValueError(f"{key}: must be in (0, 10], got {getattr(self, key)}")
        for key in ("pretrain_weight", "gan_weight"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key}: must be >= 0, got {getattr(self, key)}")
        _choice("multi_label_rule", self.multi_label_rule, MULTI_LABEL_RULES)
        _choice("pretrain_features", self.pretrain_features, ("image", "text", "both"))


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
    image_trunk: str = "inception_v3"  # inception_v3 (the paper's) | small (embedded data)
    image_weights: str = "imagenet"  # imagenet | none | path to an include_top=False weights file
    train_trunk: str = "auto"  # auto: train the trunk only when it has no pretrained weights | true | false
    small_trunk_width: int = 32
    gamma1: float = 4.0  # AttnGAN TRAIN.SMOOTH.GAMMA1
    gamma2: float = 5.0
    gamma3: float = 10.0
    eval_examples: int = 1000  # held-out examples for the end-of-epoch retrieval table
    log_every: int = 20  # steps between TensorBoard scalars
    checkpoint_every: int = 200  # steps between checkpoints (and one at every epoch end)
    keep_checkpoints: int = 3

    def validate(self) -> None:
        for key in ("epochs", "embedding_dim", "text_dim", "small_trunk_width", "eval_examples", "log_every",
                    "checkpoint_every", "keep_checkpoints"):
            _positive(key, getattr(self, key))
        if self.text_dim % 2:
            raise ValueError(f"text_dim: must be even (two LSTM directions), got {self.text_dim}")
        if not 0 < self.learning_rate < 1 or not 0 < self.lr_decay <= 1:
            raise ValueError("learning_rate must be in (0, 1) and lr_decay in (0, 1]")
        if not 0 <= self.text_dropout < 1:
            raise ValueError(f"text_dropout: must be in [0, 1), got {self.text_dropout}")
        _choice("image_trunk", self.image_trunk, ("inception_v3", "small"))
        _choice("train_trunk", self.train_trunk, ("auto", "true", "false"))
        if self.image_trunk == "small" and self.image_weights != "none":
            raise ValueError('image_weights: the small trunk has no pretrained weights, use "none"')


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

    def validate(self) -> None:
        for key in ("epochs", "log_every", "checkpoint_every", "keep_checkpoints", "sample_every", "sample_captions",
                    "eval_every"):
            _positive(key, getattr(self, key))
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay: must be in [0, 1), got {self.ema_decay}")


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


# --------------------------------------------------------------------------------------------------------------------
# Finding, loading and overriding recipes


def recipe_dirs() -> list[Path]:
    """Where recipe names are looked up, first match wins."""
    dirs = []
    if os.environ.get("T2ICTL_RECIPES"):
        dirs.append(Path(os.environ["T2ICTL_RECIPES"]))
    dirs.append(Path.cwd() / "recipes")
    dirs.extend(shipped_recipe_dirs())
    unique = []
    for path in dirs:
        if path.is_dir() and path.resolve() not in [u.resolve() for u in unique]:
            unique.append(path)
    return unique


def shipped_recipe_dirs() -> list[Path]:
    """The recipes installed with the package (the checkout's recipes/ folder in an editable install)."""
    spec = importlib.util.find_spec("t2ictl.builtin_recipes")
    return [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []


def available_recipes() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in recipe_dirs():
        for path in sorted(folder.glob("*.toml")):
            found.setdefault(path.stem, path)
    return found


def resolve_recipe_path(name_or_path: str) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.is_file():
        if not candidate.is_file():
            raise UserError(f"recipe file {candidate} does not exist")
        return candidate
    known = available_recipes()
    if name_or_path not in known:
        names = ", ".join(sorted(known)) or "none found"
        raise UserError(f"unknown recipe {name_or_path!r} (known: {names}); pass a name or a path to a .toml file")
    return known[name_or_path]


def load_recipe(name_or_path: str, overrides: list[str] | None = None) -> Recipe:
    path = resolve_recipe_path(name_or_path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid TOML: {exc}") from None
    raw.setdefault("name", path.stem)
    file_model = dict(raw.get("model", {})) if isinstance(raw.get("model"), dict) else {}
    for override in overrides or []:
        _apply_override(raw, override)
    _drop_other_backbone_keys(raw, file_model, overrides or [])
    return recipe_from_dict(raw, source=str(path))


def _drop_other_backbone_keys(raw: dict, file_model: dict, overrides: list[str]) -> None:
    """`--set model.backbone=X` on a recipe written for another backbone: the file's [model] keys that X does not
    have (e.g. DF-GAN's d_gate_init under GALIP) belong to the file's backbone and are left out. Keys given with
    --set are kept, so a wrong one is still an error."""
    model = raw.get("model")
    chosen = model.get("backbone", DEFAULT_BACKBONE) if isinstance(model, dict) else None
    if chosen is None or chosen == file_model.get("backbone", DEFAULT_BACKBONE):
        return
    if chosen not in backbones.BACKBONES:
        return  # the build names the unknown backbone
    known = {field.name for field in dataclasses.fields(backbones.config_class(chosen))}
    overridden = {o.partition("=")[0].strip() for o in overrides}
    for key in file_model:
        if key not in known and f"model.{key}" not in overridden:
            del model[key]


def recipe_from_dict(raw: dict, source: str = "<recipe>") -> Recipe:
    try:
        recipe = _build(Recipe, raw, prefix="")
        recipe.validate()
    except ValueError as exc:
        raise UserError(f"{source}: {exc}") from None
    return recipe


def recipe_to_dict(recipe: Recipe) -> dict:
    return dataclasses.asdict(recipe)


def recipe_to_toml(recipe: Recipe) -> str:
    """Serialise a resolved recipe; the result loads back to an equal recipe."""
    data = recipe_to_dict(recipe)
    lines = []
    for key, value in data.items():
        if not isinstance(value, dict):
            lines.append(f"{key} = {_toml_value(value)}")
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(f"\n[{key}]")
            lines.extend(f"{sub} = {_toml_value(item)}" for sub, item in value.items())
    return "\n".join(lines) + "\n"


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {value!r} to TOML")


def _apply_override(raw: dict, override: str) -> None:
    key, sep, text = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UserError(f"--set expects section.key=value, got {override!r}")
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()  # a bare word is a string: --set data.dataset=cub
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UserError(f"--set {key}: {part} is not a section")
    node[parts[-1]] = value


def _build(cls, raw: dict, prefix: str):
    if not isinstance(raw, dict):
        raise ValueError(f"{prefix.rstrip('.')}: expected a table, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ValueError(f"unknown key {prefix}{unknown[0]} (known: {', '.join(sorted(names))})")
    values = {}
    for name, value in raw.items():
        values[name] = _coerce(hints[name], value, f"{prefix}{name}")
    return cls(**values)


def _coerce(hint, value, key: str):
    if hint is BackboneConfig:  # the backbone named in the table decides which keys it has
        name = value.get("backbone", DEFAULT_BACKBONE) if isinstance(value, dict) else None
        hint = backbones.config_class(name) if name in backbones.BACKBONES else BackboneConfig
        if name not in backbones.BACKBONES:
            raise ValueError(f"{key}.backbone: {name!r} is not one of {', '.join(backbones.BACKBONES)}")
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, prefix=f"{key}.")
    origin = typing.get_origin(hint)
    if origin is list:
        (item_type,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ValueError(f"{key}: expected a list, got {value!r}")
        return [_coerce(item_type, item, f"{key}[{i}]") for i, item in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _coerce(option, value, key)
            except ValueError:
                continue
        raise ValueError(f"{key}: {value!r} does not fit {hint}")
    if hint is type(None):
        if value is not None:
            raise ValueError(f"{key}: expected nothing, got {value!r}")
        return None
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is bool and not isinstance(value, bool):
        raise ValueError(f"{key}: expected true or false, got {value!r}")
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"{key}: expected an integer, got {value!r}")
    if not isinstance(value, hint):
        raise ValueError(f"{key}: expected {hint.__name__}, got {value!r}")
    return value
