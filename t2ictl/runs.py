"""A run directory: its layout, and opening what it holds, for every stage that reads runs (training resuming one,
sample, export, score, bench). Whatever made a run, it opens the same way; nothing here imports training.

  recipe.toml              the resolved recipe (defaults filled, overrides applied)
  vocab.json               the vocabulary of the run's text encoder (the prepared data's, or the imported one's)
  checkpoints/<phase>/     tf.train checkpoints (keep-N) with the step, models and optimizer state
  logs/<phase>/            TensorBoard events
  encoders/                the text and image encoders (.keras), their vocab.json and encoders.json (pretrained
                           here, or imported)
  samples/                 sample grids written during training
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import keras
import tensorflow as tf

from t2ictl import fileio, recipes
from t2ictl.console import console
from t2ictl.data.vocab import Vocabulary
from t2ictl.errors import UserError
from t2ictl.models import backbones
from t2ictl.models.backbones.base import Encoders

RECIPE = "recipe.toml"
VOCAB = "vocab.json"
TEXT_ENCODER_FILE = "text_encoder.keras"
IMAGE_ENCODER_FILE = "image_encoder.keras"
ENCODERS_INFO = "encoders.json"
# Keys that may change when a run is resumed (to extend it): how long it trains and how often it logs, saves, reports.
RESUMABLE_CHANGES = {"pretrain.epochs", "pretrain.log_every", "pretrain.checkpoint_every", "pretrain.eval_examples",
                     "train.epochs", "train.log_every", "train.checkpoint_every", "train.sample_every",
                     "train.sample_captions", "train.keep_checkpoints", "pretrain.keep_checkpoints", "train.eval_every"}
# Keys of how a run executes, which a resumed run may change (one machine to a cluster and back): the global batch
# (data.batch_size), the data order and the noise do not depend on them, so the run goes on as it would have.
LAYOUT_CHANGES = ("runtime.strategy", "runtime.precision", "runtime.xla")


@dataclasses.dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def recipe_file(self) -> Path:
        return self.path / RECIPE

    @property
    def vocab_file(self) -> Path:
        return self.path / VOCAB

    @property
    def encoders(self) -> Path:
        return self.path / "encoders"

    def checkpoints(self, phase: str) -> Path:
        return self.path / "checkpoints" / phase

    def logs(self, phase: str) -> Path:
        return self.path / "logs" / phase

    def has_checkpoint(self, phase: str) -> bool:
        return tf.train.latest_checkpoint(str(self.checkpoints(phase))) is not None

    def vocab(self) -> Vocabulary:
        return Vocabulary.load(self.vocab_file)

    def recipe(self) -> recipes.Recipe:
        if not self.recipe_file.exists():
            raise UserError(f"{self.path} is not a t2ictl run ({RECIPE} missing)")
        return recipes.load_recipe(str(self.recipe_file))

    def encoders_for(self, recipe: recipes.Recipe) -> Path:
        """Where this run's GAN takes its encoders: the recipe's train.encoders (another run), else its own."""
        return find_encoders(Path(recipe.train.encoders)) if recipe.train.encoders else self.encoders


def default_run_dir(recipe: recipes.Recipe) -> Path:
    return Path("runs") / recipe.name


def open_run(path: Path, recipe: recipes.Recipe, data_dir: Path, phase: str, resume: bool) -> RunDir:
    """Create the run directory, or check that resuming it continues the same recipe on the same data.

    The run's vocabulary is its text encoder's: in the GAN phase the existing encoders' (from train.encoders, or
    imported), whose vocabulary then tokenizes the data's captions; in pretraining those of pretrain.init, else the
    data's.
    """
    run = RunDir(Path(path))
    if phase == "train":
        encoders = run.encoders_for(recipe)
    else:
        encoders = find_encoders(Path(recipe.pretrain.init)) if recipe.pretrain.init else None
    encoders_vocab = encoders_vocab_file(encoders) if encoders is not None else None
    vocab_file = encoders_vocab or data_dir / VOCAB  # encoders copied without a vocabulary: the data's
    source = f"the encoders in {encoders}" if encoders_vocab else str(data_dir)
    vocab = Vocabulary.load(vocab_file)
    if run.has_checkpoint(phase):
        if not resume:
            raise UserError(f"{run.path} already holds a {phase} checkpoint; pass --resume to continue it or "
                            "--run-dir for a new run")
        _check_same_recipe(run, recipe)
        if not _same_vocabulary(run.vocab(), vocab):
            raise UserError(f"the vocabulary of {source} differs from the one {run.path} was trained with; "
                            "point --data at the data the run was made from")
    elif resume and not run.path.exists():
        raise UserError(f"nothing to resume: {run.path} does not exist")
    run.path.mkdir(parents=True, exist_ok=True)
    fileio.write_text(run.recipe_file, recipes.recipe_to_toml(recipe))
    if not run.vocab_file.exists():
        shutil.copyfile(vocab_file, run.vocab_file)
    elif not _same_vocabulary(run.vocab(), vocab):
        raise UserError(f"{run.path} was made with another vocabulary than {source}; use another --run-dir")
    return run


def _same_vocabulary(a: Vocabulary, b: Vocabulary) -> bool:
    return (a.words, a.tokenizer) == (b.words, b.tokenizer)


def encoders_vocab_file(folder: Path) -> Path | None:
    """The vocabulary of the text encoders in `folder`: their own vocab.json, else their run's, else None."""
    folder = Path(folder)
    if not (folder / ENCODERS_INFO).exists():
        return None
    return next((path for path in (folder / VOCAB, folder.parent / VOCAB) if path.exists()), None)


def _check_same_recipe(run: RunDir, recipe: recipes.Recipe) -> None:
    before = _flatten(recipes.recipe_to_dict(run.recipe()))
    after = _flatten(recipes.recipe_to_dict(recipe))
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k) and k != "name")
    refused = [k for k in changed if k not in RESUMABLE_CHANGES and k not in LAYOUT_CHANGES]
    if refused:
        key = refused[0]
        if key == "data.batch_size":  # the one a user moving to more devices may reach for
            raise UserError(f"cannot resume {run.path} with data.batch_size = {after[key]} (was {before[key]}): the "
                            "global batch fixes the data order and an epoch's steps, so it stays in every layout, "
                            "split over the replicas; keeping the per-replica batch on more devices is a new run")
        raise UserError(f"cannot resume {run.path} with a different recipe: {key} was {before.get(key)!r}, now "
                        f"{after.get(key)!r}")
    for key in (k for k in changed if k in LAYOUT_CHANGES):
        kept = (f"; the global batch stays data.batch_size = {after['data.batch_size']}, split over this layout's "
                "replicas") if key == "runtime.strategy" else ""
        console.print(f"resuming with {key} = {after[key]!r} (was {before[key]!r}){kept}", markup=False)


def _flatten(data: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# --------------------------------------------------------------------------------------------------------------------
# Encoders


def find_encoders(path: Path) -> Path:
    """The encoders folder a user points at: a run's encoders/, or the folder itself."""
    return path / "encoders" if (path / "encoders").is_dir() else path


def save_encoders(folder: Path, text_encoder: keras.Model, image_encoder: keras.Model | None, recipe: recipes.Recipe,
                  text_scales: tuple[float, float] = (1.0, 1.0), vocab: Vocabulary | None = None,
                  source: dict | None = None) -> None:
    """Write the encoders (the image encoder may be absent: imported text-only), their vocabulary (so that a copy of
    the folder keeps it), and encoders.json with where they came from."""
    for model, filename in ((text_encoder, TEXT_ENCODER_FILE), (image_encoder, IMAGE_ENCODER_FILE)):
        if model is not None:
            with fileio.atomic_path(folder / filename) as tmp:
                model.save(tmp)
    if vocab is not None:
        vocab.save(folder / VOCAB)
    info = {"text_dim": recipe.pretrain.text_dim, "max_words": recipe.data.max_words,
            "image_size": recipe.data.image_size, "image_trunk": recipe.pretrain.image_trunk,
            "image_encoder": image_encoder is not None,
            "dataset": recipe.data.dataset,
            "contrastive": recipe.contrastive.enabled and source is None,  # released encoders were trained without
            "sentence_scale": text_scales[0], "word_scale": text_scales[1]}
    if source is not None:
        info["source"] = source
    fileio.write_json(folder / ENCODERS_INFO, info)


def load_encoders(folder: Path, recipe: recipes.Recipe | None = None) -> tuple[Encoders, dict]:
    """The frozen encoders in `folder` and their encoders.json; with a recipe, checked to fit its data sizes."""
    folder = Path(folder)
    paths = [folder / TEXT_ENCODER_FILE, folder / ENCODERS_INFO]
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise UserError(f"no pretrained encoders in {folder} ({missing[0].name} missing); run `t2ictl pretrain` "
                        "first or point --encoders at a pretraining run")
    info = json.loads(paths[1].read_text())
    has_image = info.get("image_encoder", True)
    if has_image and not (folder / IMAGE_ENCODER_FILE).exists():
        raise UserError(f"the encoders in {folder} lack {IMAGE_ENCODER_FILE}; pretrain or import them again")
    from t2ictl.models.clip_text import ClipTextTower
    from t2ictl.models.text_encoder import GlobalBatchDropout

    custom = {"ClipTextTower": ClipTextTower, "GlobalBatchDropout": GlobalBatchDropout}
    try:
        text = keras.models.load_model(paths[0], compile=False, custom_objects=custom)
        image = keras.models.load_model(folder / IMAGE_ENCODER_FILE, compile=False) if has_image else None
    except (ValueError, OSError) as exc:
        raise UserError(f"cannot load the encoders in {folder}: {exc}") from None
    for key, expected in (() if recipe is None else
                          (("max_words", recipe.data.max_words), ("image_size", recipe.data.image_size))):
        if info[key] != expected:
            raise UserError(f"the encoders in {folder} were pretrained with {key} = {info[key]}, the recipe has "
                            f"{expected}; pretrain again or fix the recipe")
    text.trainable = False
    if image is not None:
        image.trainable = False
    vocab_file = encoders_vocab_file(folder)
    vocab = Vocabulary.load(vocab_file) if vocab_file else None
    return Encoders(text, image, float(info.get("word_scale", 1.0)), vocab), info


def init_overrides(path: Path) -> list[str]:
    """The recipe values that encoders fix when phase 1 starts from them (pretrain.init): their sizes and trunk; the
    trunk's weights come from them."""
    folder = find_encoders(Path(path))
    encoders, info = load_encoders(folder)
    if encoders.image is None:
        raise UserError(f"pretrain.init: the encoders in {folder} have no image encoder, which phase 1 trains; "
                        "import them with --image-encoder")
    embedding = _find_layer(encoders.text, "embedding")
    if embedding is None:
        raise UserError(f"pretrain.init: the text encoder in {folder} is not DAMSM's bi-LSTM, which phase 1 trains")
    return [f"pretrain.text_dim={info['text_dim']}", f"pretrain.embedding_dim={embedding.output_dim}",
            f'pretrain.image_trunk="{info["image_trunk"]}"', 'pretrain.image_weights="none"']


def _find_layer(model: keras.Model, name: str):
    for layer in model.layers:
        if layer.name == name:
            return layer
        if isinstance(layer, keras.Model):
            found = _find_layer(layer, name)
            if found is not None:
                return found
    return None


# --------------------------------------------------------------------------------------------------------------------
# The generator


def build_backbone(recipe: recipes.Recipe, encoders: Encoders | None, text_dim: int) -> backbones.Backbone:
    cls = backbones.backbone_class(recipe.model.backbone)
    backbone = cls(recipe.model, recipe.data.image_size, text_dim, recipe.data.max_words, encoders)
    needed = set(recipe.model.image_sizes(recipe.data.image_size)) - {recipe.data.image_size}
    missing = sorted(needed - set(recipe.data.extra_sizes))
    if missing:
        raise UserError(f"backbone {recipe.model.backbone} trains at sizes {sorted(needed)} besides "
                        f"{recipe.data.image_size}; add them to data.extra_sizes (missing {missing})")
    return backbone


def check_backbone(recipe: recipes.Recipe) -> None:
    """Fail before any work (pretraining can take hours) when the backbone cannot train at the recipe's sizes."""
    build_backbone(recipe, None, recipe.pretrain.text_dim)


def open_generator(run: RunDir):
    """(Sampler over the EMA generator of the run's latest training checkpoint, recipe, backbone)."""
    from t2ictl.sampling import Sampler

    if not run.path.is_dir():
        raise UserError(f"run directory {run.path} does not exist")
    recipe = run.recipe()
    latest = tf.train.latest_checkpoint(str(run.checkpoints("train")))
    if latest is None:
        raise UserError(f"{run.path} has no trained generator (no checkpoint in {run.checkpoints('train')}); "
                        "run `t2ictl train` first")
    encoders, info = load_encoders(run.encoders_for(recipe), recipe)
    backbone = build_backbone(recipe, encoders, info["text_dim"])
    generator = backbone.build_generator()
    try:
        tf.train.Checkpoint(ema_generator=generator).restore(latest).expect_partial().assert_existing_objects_matched()
    except (tf.errors.OpError, ValueError, AssertionError) as exc:
        raise UserError(f"cannot restore the generator from {latest}: {str(exc).splitlines()[0]}") from None
    sampler = Sampler(generator, encoders.text, run.vocab(), recipe.data.max_words, backbone.noise_dim)
    return sampler, recipe, backbone


def open_sampler(run: Path | None = None, model: Path | None = None):
    """A sampler from a training run (its EMA generator) or from a model written by `t2ictl export`."""
    if (run is None) == (model is None):
        raise UserError("pass exactly one of --run DIR or --model DIR")
    if run is not None:
        return open_generator(RunDir(Path(run)))[0]
    from t2ictl.sampling import ExportedSampler

    return ExportedSampler(model)
