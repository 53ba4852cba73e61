"""The two weight-sharing branches of the framework, as both phases feed them.

Weight sharing is by construction: the batch of branch B is concatenated to branch A's and one set of models runs on
[A; B]. The supervised contrastive loss takes its labels from the batch (class ids, or multi-hot for multi-label data)
and marks rows that are the same example (an unlabelled image paired with itself) as positives too.
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from t2ictl.data import pipeline
from t2ictl.data.vocab import Vocabulary
from t2ictl.losses import supcon
from t2ictl.recipes import Recipe


def merge_branches(batch: dict, paired: bool) -> dict:
    """One batch of 2B rows [A; B] from a paired batch, or the batch itself."""
    if not paired:
        return batch
    return {key: tf.concat([batch["a"][key], batch["b"][key]], axis=0) for key in batch["a"]}


def contrastive_loss(features, merged: dict, recipe: Recipe, multi_label: bool, temperature: float, groups: int = 1):
    """SupCon over `features`, made of `groups` blocks of the merged batch's rows (e.g. [images; sentences])."""
    labels = merged["labels"] if multi_label else merged["class_id"]
    example_index = tf.unique(merged["example_id"]).idx
    return supcon.supcon_from_labels(
        features, tf.concat([labels] * groups, axis=0), temperature, rule=recipe.contrastive.multi_label_rule,
        example_index=tf.concat([example_index] * groups, axis=0),
    )


def dataset_fn(data_dir: Path, recipe: Recipe, vocab: Vocabulary):
    """The loop's dataset function: the training stream from `start_step` on, for one input pipeline."""
    def make(start_step: int, context: tf.distribute.InputContext) -> tf.data.Dataset:
        return pipeline.train_dataset(data_dir, recipe.data, vocab, paired=recipe.contrastive.enabled,
                                      seed=recipe.runtime.seed, input_context=context, start_step=start_step)

    return make
