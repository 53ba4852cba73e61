"""Can a run's generator draw the captioned shapes? Fit it to the training images with L1, no discriminator.

A diagnostic for the embedded `shapes` job. If the recipe's generator, given the caption's frozen text features,
learns to reproduce the images by plain regression in the GAN's step budget, the generator can represent the shapes,
and what the GAN lacks is the adversarial signal. Starts from fresh generator weights built from the run's recipe,
uses the run's pretrained encoders, and reads the result with the pixel reader on held-out captions every 1,000 steps.

    python benchmarks/generator_l1_fit.py --run runs/shapes [--data data/shapes] [--steps 3000] [--learning-rate 1e-3]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from t2ictl import runs, sampling  # noqa: E402
from t2ictl.data import pipeline  # noqa: E402
from t2ictl.errors import UserError  # noqa: E402
from t2ictl.evaluation.consistency import shapes_consistency  # noqa: E402
from t2ictl.models.text_encoder import text_features  # noqa: E402
from t2ictl.runs import RunDir  # noqa: E402
from t2ictl.training import gan  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a shapes run with pretrained encoders")
    parser.add_argument("--data", type=Path, default=None, help="prepared shapes data (default: the recipe's)")
    parser.add_argument("--steps", type=int, default=3000, help="regression steps (default 3000)")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="Adam learning rate, betas (0, 0.9)")
    parser.add_argument("--out", type=Path, default=Path("generator_l1_fit.png"), help="sample grid at the end")
    args = parser.parse_args()

    run = RunDir(args.run)
    recipe = run.recipe()
    data = args.data or recipe.data.path
    encoders, info = runs.load_encoders(run.encoders_for(recipe), recipe)
    backbone = runs.build_backbone(recipe, encoders, info["text_dim"])
    generator = backbone.build_generator()
    optimizer = keras.optimizers.Adam(args.learning_rate, beta_1=0.0, beta_2=0.9)
    batches = iter(pipeline.train_dataset(data, recipe.data, run.vocab(), paired=False, seed=recipe.runtime.seed))

    @tf.function
    def step(batch, seed):
        text = text_features(encoders.text, batch["tokens"])
        noise = tf.random.stateless_normal([tf.shape(batch["tokens"])[0], backbone.noise_dim], seed)
        inputs = text.generator_inputs(noise)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.abs(generator(inputs, training=True)["images"][-1] - batch["image"]))
        optimizer.apply_gradients(zip(tape.gradient(loss, generator.trainable_variables),
                                      generator.trainable_variables))
        return loss

    sampler = sampling.Sampler(generator, encoders.text, run.vocab(), recipe.data.max_words, backbone.noise_dim)
    table = Table(title=f"L1 fit of the {recipe.model.backbone} generator, lr {args.learning_rate:g}")
    for column in ("step", "L1", "colour", "shape", "both"):
        table.add_column(column, justify="right")
    for current in range(1, args.steps + 1):
        loss = step(next(batches), tf.constant([current, 5], tf.int64))
        if current % 1000 == 0 or current == args.steps:
            figures = shapes_consistency(sampler, data, recipe, run.vocab())
            table.add_row(str(current), f"{float(loss):.3f}", f"{figures['colour_accuracy']:.3f}",
                          f"{figures['shape_accuracy']:.3f}", f"{figures['both_accuracy']:.3f}")
    captions = gan.held_out_captions(data, recipe, run.vocab(), 8)
    sampling.write_grid(args.out, sampler.sample(captions, per_caption=4, seed=0), captions)
    Console().print(table)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    try:
        main()
    except UserError as exc:  # a wrong --run or --data: one line, as the CLI prints it
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
