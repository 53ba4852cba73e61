"""Distribution strategy, numeric precision and random draws over the global batch.

- `default`: one device. `mirrored`: every local GPU (or, without GPUs, every logical CPU device, which is how the
  tests run it). `multiworker`: MultiWorkerMirroredStrategy over the machines TF_CONFIG names.
- Precision is a Keras global dtype policy set before any model is built; with mixed_float16 the optimizers are wrapped
  in keras.optimizers.LossScaleOptimizer (dynamic loss scaling), which the phases use through `optimizer.scale_loss`.
- Random draws are made over the global batch (`global_normal`), and losses that pair rows see the global batch
  (t2ictl.replicas), so a run is the same on any number of replicas.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import keras
import tensorflow as tf

from t2ictl import replicas
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


def global_normal(shape, seed: int, step, stream: int = 0, blocks: int = 1) -> tf.Tensor:
    """This replica's rows of one normal draw over the global batch, keyed by (seed, stream, step): an example gets
    the same numbers on one device, on N replicas and on N workers (a tf.random.Generator draws per replica), so a run
    can move between layouts. `shape` is the per-replica [rows, ...], made of `blocks` blocks (t2ictl.replicas)."""
    key = tf.stack([tf.constant(seed * 1_000_003 + stream, tf.int64), tf.cast(step, tf.int64)])
    draw = tf.random.stateless_normal(tf.concat([[shape[0] * replicas.layout()[1]], shape[1:]], axis=0), key)
    return replicas.local_rows(draw, blocks)


LOSS_SCALE_ENTRIES = ("_loss_scale", "_good_steps")  # suffixes of a float16 optimizer's own checkpoint entries


def checkpoint_entries(name: str, trackable) -> dict:
    """What a checkpoint holds of `trackable` under `name`. A loss-scaled optimizer's Adam state is saved under `name`
    as an unwrapped one's is, and its loss scale beside it, so that a run can change runtime.precision on resume."""
    if isinstance(trackable, keras.optimizers.LossScaleOptimizer):
        scale, good_steps = LOSS_SCALE_ENTRIES
        return {name: trackable.inner_optimizer, f"{name}{scale}": trackable.dynamic_scale,
                f"{name}{good_steps}": trackable.step_counter}
    return {name: trackable}
