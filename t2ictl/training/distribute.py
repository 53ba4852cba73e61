"""Distribution strategy, numeric precision and the cross-replica pieces of the contrastive loss.

- `default`: one device. `mirrored`: every local GPU (or, without GPUs, every logical CPU device, which is how the
  tests run it). `multiworker`: MultiWorkerMirroredStrategy over the machines TF_CONFIG names.
- Precision is a Keras global dtype policy set before any model is built; with mixed_float16 the optimizers are wrapped
  in keras.optimizers.LossScaleOptimizer (dynamic loss scaling), which the phases use through `optimizer.scale_loss`.
- The supervised contrastive loss must see the global batch: `gather` concatenates a per-replica tensor across replicas
  (all_gather's gradient sums the replicas' upstream gradients and hands each replica its slice, so with every replica
  computing the same global loss divided by the replica count, the summed parameter gradients equal those of one device
  on the global batch).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import keras
import tensorflow as tf

from t2ictl.errors import UserError


def make_strategy(name: str) -> tf.distribute.Strategy:
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise UserError("runtime.strategy = multiworker needs TF_CONFIG naming the cluster and this worker's "
                            "task (see `t2ictl train --help`)")
        try:
            json.loads(os.environ["TF_CONFIG"])
        except json.JSONDecodeError as exc:
            raise UserError(f"TF_CONFIG is not valid JSON: {exc}") from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise UserError(f"unknown strategy {name!r}")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type in ("chief", None) or (task_type == "worker" and task_id == 0
                                            and "chief" not in resolver.cluster_spec().as_dict())


def resolve_precision(name: str, cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The policy `auto` stands for on this machine: the fastest one whose training behaves as float32's.

    GPU: bfloat16 from compute capability 8.0 (Ampere), float16 with loss scaling on 7.x (tensor cores without
    bfloat16), else float32. CPU: bfloat16 where the cores compute it natively (AVX-512 BF16 or AMX; 1.7x float32 on
    the DF-GAN step here, BENCHMARKS.md), else float32, since emulated bfloat16 is slower than float32."""
    if name != "auto":
        return name
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability") or (0, 0)
        return "mixed_bfloat16" if capability >= (8, 0) else "mixed_float16" if capability >= (7, 0) else "float32"
    return "mixed_bfloat16" if cpu_computes_bfloat16(cpuinfo) else "float32"


def cpu_computes_bfloat16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    try:
        flags = cpuinfo.read_text()
    except OSError:  # not Linux: no way to tell, so the safe choice
        return False
    return re.search(r"\b(avx512_bf16|amx_bf16)\b", flags) is not None


def set_precision(policy: str) -> None:
    keras.mixed_precision.set_global_policy(policy)


def precision_in_use() -> str:
    """The global policy's name (what `auto` resolved to, once set_precision ran)."""
    return keras.mixed_precision.global_policy().name


def optimizer(inner: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    """Wrap an optimizer for dynamic loss scaling when the global policy (set by set_precision) computes in float16."""
    if keras.mixed_precision.global_policy().compute_dtype == "float16":
        return keras.optimizers.LossScaleOptimizer(inner)
    return inner


def global_normal(shape, seed: int, step, stream: int = 0) -> tf.Tensor:
    """This replica's rows of one normal draw over the global batch, keyed by (seed, stream, step): an example gets
    the same numbers on one device, on N replicas and on N workers (a tf.random.Generator draws per replica), so a run
    can move between layouts. `shape` is the per-replica [rows, ...]."""
    context = tf.distribute.get_replica_context()
    replicas = context.num_replicas_in_sync if context else 1
    index = context.replica_id_in_sync_group if context else 0
    rows = shape[0]
    key = tf.stack([tf.constant(seed * 1_000_003 + stream, tf.int64), tf.cast(step, tf.int64)])
    draw = tf.random.stateless_normal(tf.concat([[rows * replicas], shape[1:]], axis=0), key)
    return draw[index * rows:(index + 1) * rows]


LOSS_SCALE_ENTRIES = ("_loss_scale", "_good_steps")  # suffixes of a float16 optimizer's own checkpoint entries


def checkpoint_entries(name: str, trackable) -> dict:
    """What a checkpoint holds of `trackable` under `name`. A loss-scaled optimizer's Adam state is saved under `name`
    as an unwrapped one's is, and its loss scale beside it, so that a run can change runtime.precision on resume."""
    if isinstance(trackable, keras.optimizers.LossScaleOptimizer):
        scale, good_steps = LOSS_SCALE_ENTRIES
        return {name: trackable.inner_optimizer, f"{name}{scale}": trackable.dynamic_scale,
                f"{name}{good_steps}": trackable.step_counter}
    return {name: trackable}


def gather(tensor: tf.Tensor) -> tf.Tensor:
    """`tensor` of every replica concatenated along axis 0 (itself on one replica); differentiable."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return tensor
    return context.all_gather(tensor, axis=0)
