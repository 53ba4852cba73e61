"""AttnGAN's released DAMSM files as t2ictl encoders: the captions pickle (vocabulary), RNN_ENCODER, CNN_ENCODER.

- captions pickle: `[train_captions, test_captions, ixtoword, wordtoix]`, written by Python 2; its ids are kept.
- RNN_ENCODER: `encoder.weight` (the embedding) and a one-layer bidirectional `nn.LSTM` (`rnn.*_l0`, `*_reverse`).
  torch and Keras order the LSTM gates alike (input, forget, cell, output); torch's kernels are transposed and it
  keeps two biases (input and hidden), which add into Keras' one.
- CNN_ENCODER: torchvision's Inception-v3 modules under their own names, `emb_features` (1x1 convolution on
  Mixed_6e, no bias) and `emb_cnn_code` (a linear layer on the pooled Mixed_7c).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from t2ictl import fileio, recipes, runs
from t2ictl.data.vocab import Vocabulary
from t2ictl.errors import UserError
from t2ictl.models.image_encoder import build_image_encoder
from t2ictl.models.text_encoder import build_text_encoder
from t2ictl.models.torch_inception import torch_inception_weights
from t2ictl.torch_files import StateDict, read_checkpoint, read_pickle

IMAGE_TRUNK = "inception_v3_torchvision"


@dataclass(frozen=True)
class DamsmCaptions:
    vocab: Vocabulary
    train: list[list[int]]  # the token ids of every training caption, in the pickle's order
    test: list[list[int]]


def read_captions(path: Path) -> DamsmCaptions:
    data = read_pickle(path)
    if not (isinstance(data, list) and len(data) == 4 and isinstance(data[2], dict) and isinstance(data[3], dict)):
        raise UserError(f"{path}: not a DAMSM captions pickle ([train_captions, test_captions, ixtoword, wordtoix])")
    ixtoword = {int(i): _text(w) for i, w in data[2].items()}
    try:
        vocab = Vocabulary.damsm(ixtoword)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    mismatched = [w for w, i in data[3].items() if ixtoword.get(int(i)) != _text(w)]
    if mismatched:
        raise UserError(f"{path}: wordtoix and ixtoword disagree on {_text(mismatched[0])!r}")
    return DamsmCaptions(vocab, [list(map(int, c)) for c in data[0]], [list(map(int, c)) for c in data[1]])


def _text(word) -> str:
    return word.decode("latin-1") if isinstance(word, bytes) else str(word)


def text_encoder_state(path: Path) -> StateDict:
    return StateDict(read_checkpoint(path), path, "the text encoder")


def text_encoder_sizes(state: StateDict) -> tuple[int, int, int]:
    """(vocabulary size, embedding dim, text dim) of an RNN_ENCODER state dict."""
    for key in ("encoder.weight", "rnn.weight_ih_l0"):
        if key not in state.arrays or state.arrays[key].ndim != 2:
            raise UserError(f"{state.path}: no 2-d parameter {key}; not a DAMSM text encoder (RNN_ENCODER)")
    vocab_size, embedding_dim = state.arrays["encoder.weight"].shape
    return vocab_size, embedding_dim, 2 * (state.arrays["rnn.weight_ih_l0"].shape[0] // 4)


def load_text_encoder(state: StateDict, vocab: Vocabulary, max_words: int) -> keras.Model:
    vocab_size, embedding_dim, text_dim = text_encoder_sizes(state)
    if vocab_size != len(vocab):
        raise UserError(f"{state.path}: the text encoder embeds {vocab_size} words, the captions pickle has "
                        f"{len(vocab)}; pass the pickle the encoder was trained with")
    model = build_text_encoder(vocab_size, max_words, embedding_dim, text_dim)
    model.get_layer("embedding").set_weights([state("encoder.weight", (vocab_size, embedding_dim))])
    bilstm = model.get_layer("bilstm")
    hidden = text_dim // 2
    for layer, suffix in ((bilstm.forward_layer, ""), (bilstm.backward_layer, "_reverse")):
        kernel = state(f"rnn.weight_ih_l0{suffix}", (4 * hidden, embedding_dim))
        recurrent = state(f"rnn.weight_hh_l0{suffix}", (4 * hidden, hidden))
        bias = state(f"rnn.bias_ih_l0{suffix}", (4 * hidden,)) + state(f"rnn.bias_hh_l0{suffix}", (4 * hidden,))
        layer.set_weights([kernel.T, recurrent.T, bias])
    _refuse_unused(state)
    return model


def load_image_encoder(path: Path, image_size: int, text_dim: int) -> keras.Model:
    state = StateDict(read_checkpoint(path), path, "the image encoder")
    model = build_image_encoder(IMAGE_TRUNK, image_size, text_dim, weights="none", train_trunk="false")
    torch_inception_weights(model.get_layer("torch_inception_v3"), state)
    local = state("emb_features.weight", (text_dim, 768, 1, 1))
    model.get_layer("local_projection").set_weights([np.transpose(local, (2, 3, 1, 0))])
    model.get_layer("global").set_weights([state("emb_cnn_code.weight", (text_dim, 2048)).T,
                                           state("emb_cnn_code.bias", (text_dim,))])
    _refuse_unused(state)
    return model


def _refuse_unused(state: StateDict) -> None:
    unused = state.unused()
    if unused:
        raise UserError(f"{state.path}: parameter {unused[0]} has no place in the model ({len(unused)} unused); "
                        "is this the right file?")


def recipe_overrides(state: StateDict) -> list[str]:
    """The recipe values an imported DAMSM pair fixes: its sizes and torchvision's trunk, no trunk weights to load."""
    _, embedding_dim, text_dim = text_encoder_sizes(state)
    return [f"pretrain.text_dim={text_dim}", f"pretrain.embedding_dim={embedding_dim}",
            f'pretrain.image_trunk="{IMAGE_TRUNK}"', 'pretrain.image_weights="none"']


def file_record(path: Path) -> dict:
    return {"file": str(Path(path).resolve()), "sha256": fileio.sha256_file(Path(path))}


def write_run(run: runs.RunDir, recipe: recipes.Recipe, text: keras.Model, image: keras.Model | None,
              vocab: Vocabulary, text_file: Path, captions_file: Path, image_file: Path | None) -> dict:
    """The run's recipe, vocabulary and encoders, encoders.json naming the released files; returns that record."""
    source = {"kind": "damsm", "text_encoder": file_record(text_file), "captions": file_record(captions_file),
              **({} if image_file is None else {"image_encoder": file_record(image_file)})}
    write_encoders_run(run, recipe, text, image, vocab, source)
    return source


def write_encoders_run(run: runs.RunDir, recipe: recipes.Recipe, text: keras.Model, image: keras.Model | None,
                       vocab: Vocabulary, source: dict) -> None:
    """An imported run's recipe, vocabulary and encoders, encoders.json recording `source`."""
    run.path.mkdir(parents=True, exist_ok=True)
    fileio.write_text(run.recipe_file, recipes.recipe_to_toml(recipe))
    vocab.save(run.vocab_file)
    runs.save_encoders(run.encoders, text, image, recipe, vocab=vocab, source=source)


def import_encoders(text_file: Path, image_file: Path | None, captions_file: Path, run_dir: Path,
                    recipe_name: str, overrides: list[str], overwrite: bool = False) -> dict:
    """Write a run whose vocabulary and encoders are the released ones; returns what was imported."""
    run = runs.RunDir(Path(run_dir))
    if (run.encoders / runs.ENCODERS_INFO).exists() and not overwrite:
        raise UserError(f"{run.encoders} already holds encoders; pass --overwrite or another --run-dir")
    captions = read_captions(captions_file)
    state = text_encoder_state(text_file)
    recipe = recipes.load_recipe(recipe_name, overrides + recipe_overrides(state))
    text = load_text_encoder(state, captions.vocab, recipe.data.max_words)
    image = None if image_file is None else load_image_encoder(image_file, recipe.data.image_size,
                                                               recipe.pretrain.text_dim)
    write_run(run, recipe, text, image, captions.vocab, text_file, captions_file, image_file)
    return {"run": run, "recipe": recipe, "vocab": captions.vocab, "text_dim": recipe.pretrain.text_dim,
            "captions": (len(captions.train), len(captions.test)), "image": image is not None}
