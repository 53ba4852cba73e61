"""The global batch seen from inside one replica's step, in the order one device would hold it.

A step's batch may be several blocks stacked along the rows (the GAN and pretraining phases merge the framework's two
branches as [A; B]). Under tf.distribute every replica holds its consecutive share of every block, so on one device the
rows are [A_0 A_1 ...; B_0 B_1 ...] and replica r holds [A_r; B_r]. Terms that pair a row with other rows (a
discriminator's mismatched sentences, DAMSM's in-batch negatives, one noise draw over the batch) use these functions
to see the rows in one-device order, so that a run computes the same numbers on any number of replicas and can move
between them. `gather` is differentiable: all_gather's gradient sums every replica's upstream gradient and hands each
replica its rows, so a term every replica computes alike on the gathered batch, divided by the replica count as every
per-replica loss is, gets the gradient it has on one device.
"""

from __future__ import annotations

import tensorflow as tf


def layout() -> tuple[int | tf.Tensor, int]:
    """(this replica's index, the number of replicas in sync); (0, 1) outside a replica context."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return 0, 1
    return context.replica_id_in_sync_group, context.num_replicas_in_sync


def gather(tensor, blocks: int = 1) -> tf.Tensor:
    """Every replica's rows of `tensor` (this replica's [blocks x n, ...]) in one-device order [blocks x R x n, ...]."""
    _, replicas = layout()
    if replicas == 1:
        return tensor
    gathered = tf.distribute.get_replica_context().all_gather(tensor, axis=0)  # [R x blocks x n, ...]
    gathered.set_shape([None, *tensor.shape[1:]])
    if blocks == 1:
        return gathered
    return _swap_leading(gathered, replicas, blocks)


def local_rows(tensor, blocks: int = 1) -> tf.Tensor:
    """This replica's rows [blocks x n, ...] of a tensor in one-device order [blocks x R x n, ...]."""
    index, replicas = layout()
    if replicas == 1:
        return tensor
    per_replica = _swap_leading(tensor, blocks, replicas)  # [R x blocks x n, ...]
    rows = tf.shape(tensor)[0] // replicas
    return per_replica[index * rows:(index + 1) * rows]


def roll(tensor, shift: int, blocks: int = 1) -> tf.Tensor:
    """This replica's rows of the one-device batch rolled by `shift` rows (ops.roll(x, shift, axis=0) on one device)."""
    if layout()[1] == 1:
        return tf.roll(tensor, shift, axis=0)
    return local_rows(tf.roll(gather(tensor, blocks), shift, axis=0), blocks)


def _swap_leading(tensor, outer: int, inner: int) -> tf.Tensor:
    """Rows grouped [outer x inner x n] regrouped as [inner x outer x n]."""
    shape = tf.shape(tensor)
    grouped = tf.reshape(tensor, tf.concat([[outer, inner, shape[0] // (outer * inner)], shape[1:]], axis=0))
    rank = len(tensor.shape)
    swapped = tf.reshape(tf.transpose(grouped, [1, 0, 2, *range(3, rank + 2)]), shape)
    swapped.set_shape(tensor.shape)
    return swapped
