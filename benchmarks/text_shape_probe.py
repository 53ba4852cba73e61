"""How far apart a pretrained text encoder puts the shapes and colours of the embedded `shapes` captions.

The generator sees a caption only through the frozen sentence vector, so two shapes whose captions map to nearly the
same vector are hard for it to tell apart. This encodes the first caption of up to 3,000 training and 1,000
held-out images, takes each attribute value's mean sentence vector over the training captions, and prints:
- the held-out accuracy of the nearest mean (cosine) for shape and for colour;
- the cosine between the shapes' mean vectors (1 = the same direction).

    python benchmarks/text_shape_probe.py --encoders RUN_OR_ENCODERS --data data/shapes
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from t2ictl import startup

startup.start_tensorflow()  # before anything imports TensorFlow, so that its start-up notices stay quiet

from rich.console import Console
from rich.table import Table

from t2ictl import recipes, runs
from t2ictl.evaluation.consistency import held_out, parse_caption
from t2ictl.models.text_encoder import text_features
from t2ictl.sampling import tokenize_captions


def sentence_vectors(encoders, vocab, data: Path, split: str, count: int) -> tuple[np.ndarray, list[dict]]:
    """Unit sentence vectors of the split's first captions, and each caption's asked attributes."""
    recipe = recipes.load_recipe("shapes")
    captions, _ = held_out(data, recipe, vocab, count, split)
    tokens, _ = tokenize_captions(captions, vocab, recipe.data.max_words)
    vectors = text_features(encoders.text, tokens).sentence.numpy().astype(np.float64)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True), [parse_caption(c) for c in captions]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoders", type=Path, required=True, help="a pretraining run or its encoders/ folder")
    parser.add_argument("--data", type=Path, required=True, help="the prepared `shapes` data")
    args = parser.parse_args()
    folder = runs.find_encoders(args.encoders)
    encoders, _ = runs.load_encoders(folder)
    vocab = encoders.vocab or runs.RunDir(args.encoders).vocab()
    train, train_asked = sentence_vectors(encoders, vocab, args.data, "train", 3000)
    test, test_asked = sentence_vectors(encoders, vocab, args.data, "test", 1000)
    console = Console()
    for key in ("shape", "colour"):
        values = sorted({a[key] for a in train_asked})
        train_ids = np.array([values.index(a[key]) for a in train_asked])
        test_ids = np.array([values.index(a[key]) for a in test_asked])
        means = np.stack([train[train_ids == k].mean(axis=0) for k in range(len(values))])
        means /= np.linalg.norm(means, axis=1, keepdims=True)
        accuracy = np.mean((test @ means.T).argmax(axis=1) == test_ids)
        console.print(f"{key}: held-out nearest-mean accuracy {accuracy:.3f}")
        if key == "shape":
            table = Table("cosine", *values)
            for value, row in zip(values, means @ means.T):
                table.add_row(value, *(f"{c:.2f}" for c in row))
            console.print(table)


if __name__ == "__main__":
    main()
