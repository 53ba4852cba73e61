"""`t2ictl export`: a run's EMA generator and text encoder as one SavedModel that maps caption strings to images.

Signatures (loadable with tf.saved_model.load or tensorflow_hub.load, no t2ictl needed):
  serving_default(captions: string[N], seed: int64[], truncation: float32[]) -> {"images": uint8[N, S, S, 3]}
  with_noise(captions: string[N], noise: float32[N, noise_dim]) -> {"images": uint8[N, S, S, 3]}
Tokenisation runs in the graph with the run's vocabulary; noise from a seed is drawn as `t2ictl sample` draws it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

import tensorflow as tf

from t2ictl import fileio
from t2ictl.data.vocab import GraphTokenizer
from t2ictl.errors import UserError
from t2ictl.models.text_encoder import text_features
from t2ictl.sampling import noise, to_uint8


class TextToImage(tf.Module):
    def __init__(self, tokenizer: GraphTokenizer, text_encoder, generator, noise_dim: int):
        super().__init__(name="t2ictl")
        self.tables = tokenizer.tables  # tracked so the vocabulary is saved with the model
        # the models are not tracked (walking their object graph doubled the time of a save), only the variables the
        # signatures capture (signatures())
        self.models = SimpleNamespace(tokenizer=tokenizer, text_encoder=text_encoder, generator=generator)
        self.noise_dim = noise_dim
        captions = tf.TensorSpec([None], tf.string, name="captions")
        self.generate = tf.function(self._generate, input_signature=[
            captions, tf.TensorSpec([], tf.int64, name="seed"), tf.TensorSpec([], tf.float32, name="truncation")])
        self.generate_with_noise = tf.function(self._images, input_signature=[
            captions, tf.TensorSpec([None, noise_dim], tf.float32, name="noise")])

    def signatures(self) -> dict:
        """The two signatures, traced; the variables they capture become tracked, so that a save holds them."""
        traced = {"serving_default": self.generate.get_concrete_function(),
                  "with_noise": self.generate_with_noise.get_concrete_function()}
        self.captured = [variable for function in traced.values() for variable in function.variables]
        return traced

    def _generate(self, captions, seed, truncation):
        # through the other signature's function, so that the generator is traced once
        return self.generate_with_noise(captions, noise(tf.shape(captions)[0], self.noise_dim, seed, truncation))

    def _images(self, captions, z):
        models = self.models
        tokens, _ = models.tokenizer.ids(captions)
        out = models.generator(text_features(models.text_encoder, tokens).generator_inputs(z), training=False)
        return {"images": to_uint8(out["images"][-1])}


def export_run(run_dir: Path, out: Path, overwrite: bool = False) -> Path:
    from t2ictl.runs import RunDir, open_generator

    out = Path(out)
    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists; pass --overwrite to replace it")
    run = RunDir(Path(run_dir))
    sampler, recipe, backbone = open_generator(run)
    module = TextToImage(GraphTokenizer(run.vocab(), recipe.data.max_words), sampler.text_encoder,
                         sampler.generator, backbone.noise_dim)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tf.saved_model.save(module, str(staging), signatures=module.signatures())
        extra = staging / "assets.extra"
        extra.mkdir(exist_ok=True)
        shutil.copyfile(run.recipe_file, extra / "recipe.toml")
        shutil.copyfile(run.vocab_file, extra / "vocab.json")
        fileio.write_json(extra / "model.json", {"noise_dim": backbone.noise_dim, "image_size": recipe.data.image_size,
                                                 "backbone": recipe.model.backbone, "max_words": recipe.data.max_words})
        _replace_dir(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _replace_dir(new: Path, target: Path) -> None:
    """Put folder `new` at `target`; an existing target is moved aside first and removed only afterwards."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
