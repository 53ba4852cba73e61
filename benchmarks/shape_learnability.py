"""How fast a small CNN learns the shape and the colour of the embedded single-object images, per drawing geometry.

A GAN's discriminator and the pretrained image encoder have to learn the shape before the generator can follow it, so
the steps a plain supervised classifier needs are a floor for the embedded job. This trains a small CNN built like the
pretraining's small trunk (three stride-2 4x4 convolutions with BatchNorm, where the trunk has four, then global
pooling) with two softmax heads (4 shapes, 5 colours), Adam 4e-4, batch 32, on 4,000 images drawn with each geometry,
and reads held-out accuracy.

    python benchmarks/shape_learnability.py [--steps 1000] [--seeds 3] [--image-size 32]

Prints the median over the seeds of the held-out shape and colour accuracy after 100, 200, 400 and `--steps` steps.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from t2ictl.data.sources import shapes  # noqa: E402

GEOMETRIES = {
    "current": shapes.GEOMETRY,
    "earlier (to 2026-11-25)": shapes.Geometry(small_radius=(0.12, 0.16), large_radius=(0.22, 0.27), jitter_x=0.04,
                                               jitter_y=0.12),
}


def images(count: int, seed: int, geometry: shapes.Geometry, size: int):
    """Images in [-1, 1] with their shape and colour indices, drawn as the dataset draws them."""
    rng = np.random.default_rng(seed)
    pixels, shape_ids, colour_ids = [], [], []
    for _ in range(count):
        objects, attributes = shapes.single_object(rng, geometry)
        pixels.append(shapes.render(objects, attributes["background"], size, rng))
        shape_ids.append(shapes.SHAPES.index(attributes["shape"]))
        colour_ids.append(list(shapes.COLOURS).index(attributes["colour"]))
    return np.stack(pixels).astype(np.float32) / 127.5 - 1.0, np.array(shape_ids), np.array(colour_ids)


def classifier(size: int) -> keras.Model:
    model = keras.Sequential([keras.Input((size, size, 3))])
    for filters in (32, 64, 128):
        model.add(keras.layers.Conv2D(filters, 4, strides=2, padding="same", use_bias=False))
        model.add(keras.layers.BatchNormalization())
        model.add(keras.layers.LeakyReLU(0.2))
    model.add(keras.layers.GlobalAveragePooling2D())
    model.add(keras.layers.Dense(len(shapes.SHAPES) + len(shapes.COLOURS)))
    return model


def learning_curve(geometry: shapes.Geometry, seed: int, steps: int, size: int) -> dict[int, tuple[float, float]]:
    """{step: (shape accuracy, colour accuracy)} on 500 held-out images."""
    keras.utils.set_random_seed(seed)
    train_x, train_shape, train_colour = images(4000, 0, geometry, size)
    test_x, test_shape, test_colour = images(500, 1, geometry, size)
    model, optimizer, split = classifier(size), keras.optimizers.Adam(4e-4), len(shapes.SHAPES)

    @tf.function
    def step(x, shape_id, colour_id):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = (tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(shape_id, logits[:, :split]))
                    + tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(colour_id, logits[:, split:])))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))

    rng, curve = np.random.default_rng(seed), {}
    for current in range(1, steps + 1):
        batch = rng.integers(0, len(train_x), 32)
        step(train_x[batch], train_shape[batch], train_colour[batch])
        if current in (100, 200, 400, steps):
            logits = model(test_x, training=False).numpy()
            curve[current] = (float(np.mean(logits[:, :split].argmax(1) == test_shape)),
                              float(np.mean(logits[:, split:].argmax(1) == test_colour)))
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="training steps per run (default 1000)")
    parser.add_argument("--seeds", type=int, default=3, help="runs per geometry; the table shows medians (default 3)")
    parser.add_argument("--image-size", type=int, default=32, help="image size in pixels (default 32)")
    args = parser.parse_args()
    table = Table(title=f"held-out accuracy, {args.image_size} px, median of {args.seeds} runs")
    table.add_column("geometry")
    table.add_column("step", justify="right")
    table.add_column("shape", justify="right")
    table.add_column("colour", justify="right")
    for name, geometry in GEOMETRIES.items():
        curves = [learning_curve(geometry, seed, args.steps, args.image_size) for seed in range(args.seeds)]
        for current in curves[0]:
            shape = np.median([curve[current][0] for curve in curves])
            colour = np.median([curve[current][1] for curve in curves])
            table.add_row(name, str(current), f"{shape:.2f}", f"{colour:.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
