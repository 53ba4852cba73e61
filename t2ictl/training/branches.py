"""The two weight-sharing branches of the framework, as both phases feed them.

Weight sharing is by construction: the batch of branch B is concatenated to branch A's and one set of models runs on
[A; B]. The supervised contrastive loss takes its labels from the batch (class ids, or multi-hot for multi-label data)
and marks rows that are the same example (equal `example_key`, a hash of the example id the pipeline adds; an
unlabelled image is paired with itself) as positives too.
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from t2ictl.data import pipeline
from t2ictl.data.vocab import Vocabulary
from t2ictl.losses import supcon
from t2ictl.recipes import Recipe
from t2ictl.training import distribute


def merge_branches(batch: dict, paired: bool) -> dict:
    """One batch of 2B rows [A; B] from a paired batch, or the batch itself."""
    if not paired:
        return batch
    return {key: tf.concat([batch["a"][key], batch["b"][key]], axis=0) for key in batch["a"]}


def images_per_step(recipe: Recipe) -> int:
    """Images one global step consumes: data.batch_size per branch, two branches when contrastive is on."""
    return recipe.data.batch_size * (2 if recipe.contrastive.enabled else 1)


def positives_note(manifest: dict, recipe: Recipe) -> str | None:
    """What the contrastive loss has for positives when the training images lack labels, for the run's output."""
    train = manifest["splits"]["train"]
    if not recipe.contrastive.enabled or not train["unlabelled"]:
        return None
    if not train["labelled"]:
        return ("note: the training split has no labels, so the contrastive loss has only each image's own caption "
                "pairs (two views, two captions) as positives")
    return (f"note: {train['unlabelled']} of {train['examples']} training images have no label; their only "
            "positives are their own caption pairs")


def contrastive_loss(features, merged: dict, recipe: Recipe, multi_label: bool, temperature: float, groups: int = 1):
    """SupCon over `features`, made of `groups` blocks of the merged batch's rows (e.g. [images; sentences]).

    Under a distribution strategy the features, labels and example keys of every replica are gathered first, so
    positives and negatives come from the global batch.
    """
    labels = merged["labels"] if multi_label else merged["class_id"]
    labels = distribute.gather(tf.concat([labels] * groups, axis=0))
    example_keys = distribute.gather(tf.concat([merged["example_key"]] * groups, axis=0))
    return supcon.supcon_from_labels(distribute.gather(features), labels, temperature,
                                     rule=recipe.contrastive.multi_label_rule, example_index=example_keys)


def dataset_fn(data_dir: Path, recipe: Recipe, vocab: Vocabulary):
    """The loop's dataset function: the training stream from `start_step` on, for one input pipeline."""
    def make(start_step: int, context: tf.distribute.InputContext) -> tf.data.Dataset:
        return pipeline.train_dataset(data_dir, recipe.data, vocab, paired=recipe.contrastive.enabled,
                                      seed=recipe.runtime.seed, input_context=context, start_step=start_step)

    return make
