"""The two weight-sharing branches of the framework, as both phases feed them.

Weight sharing is by construction: the batch of branch B is concatenated to branch A's and one set of models runs on
[A; B]. The supervised contrastive loss takes its labels from the batch (class ids, or multi-hot for multi-label data)
and marks rows that are the same example (equal `example_key`, a hash of the example id the pipeline adds; an
unlabelled image is paired with itself) as positives too.
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from t2ictl import replicas
from t2ictl.data import pipeline
from t2ictl.data.vocab import Vocabulary
from t2ictl.losses import supcon
from t2ictl.losses.label_classifier import label_classifier_loss
from t2ictl.losses.unicl import unicl_loss
from t2ictl.recipes import Recipe


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
    labels = replicas.gather(tf.concat([labels] * groups, axis=0))
    example_keys = replicas.gather(tf.concat([merged["example_key"]] * groups, axis=0))
    return supcon.supcon_from_labels(replicas.gather(features), labels, temperature,
                                     rule=recipe.contrastive.multi_label_rule, example_index=example_keys)


def image_text_loss(image_features, text_features, merged: dict, recipe: Recipe, multi_label: bool,
                    temperature: float, groups: int = 1):
    """The UniCL-style loss of rows (image i, text i), in `groups` blocks of the merged batch's rows, positives from
    the labels; gathered over replicas as SupCon is."""
    labels = merged["labels"] if multi_label else merged["class_id"]
    labels = replicas.gather(tf.concat([labels] * groups, axis=0))
    example_keys = replicas.gather(tf.concat([merged["example_key"]] * groups, axis=0))
    weights = supcon.positive_weights(labels, recipe.contrastive.multi_label_rule, example_keys)
    return unicl_loss(replicas.gather(image_features), replicas.gather(text_features), weights, temperature)


def classifier_loss(head, features, merged: dict, multi_label: bool, groups: int = 1):
    """Cross-entropy of the label head on `features` (`groups` blocks of the merged batch's rows); a mean over rows,
    so each replica's share averages to the global one."""
    class_ids = tf.concat([merged["class_id"]] * groups, axis=0)
    labels = tf.concat([merged["labels"]] * groups, axis=0)
    return label_classifier_loss(head(features), class_ids, labels, multi_label)


def label_head(classes: int, feature_dim: int, name: str):
    """The linear label head of contrastive.loss = "classifier", built."""
    import keras

    head = keras.layers.Dense(classes, name=name)
    head.build((None, feature_dim))
    return head


def dataset_fn(data_dir: Path, recipe: Recipe, vocab: Vocabulary):
    """The loop's dataset function: the training stream from `start_step` on, for one input pipeline."""
    def make(start_step: int, context: tf.distribute.InputContext) -> tf.data.Dataset:
        return pipeline.train_dataset(data_dir, recipe.data, vocab, paired=recipe.contrastive.enabled,
                                      seed=recipe.runtime.seed, input_context=context, start_step=start_step)

    return make
