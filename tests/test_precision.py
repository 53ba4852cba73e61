"""Numeric precision: what `auto` resolves to, loss scaling for float16, and a mixed-precision run of the loop."""

import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import manifest_of, scalars, tiny_recipe

from t2ictl.training import distribute, gan
from t2ictl.runs import open_run

FLAGS = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f {extra}\n"


@pytest.mark.parametrize("extra, expected", [("avx512_bf16", "mixed_bfloat16"), ("amx_bf16 amx_tile", "mixed_bfloat16"),
                                             ("avx512_vnni", "float32"), ("", "float32")])
def test_auto_is_bfloat16_only_where_the_cpu_computes_it(tmp_path, extra, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(FLAGS.format(extra=extra))
    assert distribute.resolve_precision("auto", cpuinfo) == expected
    assert distribute.resolve_precision("float32", cpuinfo) == "float32"  # an explicit choice is kept


def test_auto_without_cpu_flags_falls_back_to_float32(tmp_path):
    assert distribute.resolve_precision("auto", tmp_path / "absent") == "float32"


@pytest.mark.parametrize("policy, scaled", [("mixed_float16", True), ("mixed_bfloat16", False), ("float32", False)])
def test_only_float16_gets_loss_scaling(policy, scaled):
    distribute.set_precision(policy)
    try:
        wrapped = distribute.optimizer(keras.optimizers.Adam(1e-3))
    finally:
        distribute.set_precision("float32")
    assert isinstance(wrapped, keras.optimizers.LossScaleOptimizer) is scaled


def logged_steps(run, tag: str) -> list[int]:
    steps = []
    for path in sorted(run.logs("train").glob("events.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            steps.extend(event.step for value in event.summary.value if value.tag == tag)
    return sorted(steps)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_a_mixed_precision_gan_run_trains_and_resumes(policy, short_run, shapes_data, tmp_path):
    """The tiny GAN phase under a mixed policy: finite losses, a loss-scale state in the float16 checkpoint, and a
    resumed run continues from it."""
    shutil.copytree(short_run.path / "encoders", tmp_path / "run" / "encoders")
    shutil.copyfile(short_run.path / "vocab.json", tmp_path / "run" / "vocab.json")
    checkpoint_steps = []
    try:
        for epochs, resume in ((1, False), (2, True)):
            recipe = tiny_recipe(shapes_data, f"runtime.precision={policy}", f"train.epochs={epochs}",
                                 "train.log_every=2")
            run = open_run(tmp_path / "run", recipe, shapes_data, "train", resume=resume)
            gan.train(recipe, shapes_data, manifest_of(shapes_data), run)
            checkpoint_steps.append(tf.train.load_variable(tf.train.latest_checkpoint(str(run.checkpoints("train"))),
                                                           "step/.ATTRIBUTES/VARIABLE_VALUE"))
    finally:
        distribute.set_precision("float32")
    losses = scalars(run, "g_loss") + scalars(run, "d_loss") + scalars(run, "supcon")
    assert len(losses) >= 12 and np.all(np.isfinite(losses))
    first, second = checkpoint_steps
    assert first > 0 and second == 2 * first
    logged = logged_steps(run, "g_loss")  # resumed at `first`, not restarted from step 0
    assert logged == sorted(set(logged)) and logged[-1] == second and sum(s <= first for s in logged) == first // 2
    names = {name for name, _ in tf.train.list_variables(str(run.checkpoints("train")))}
    assert any("loss_scale" in name or "dynamic_scale" in name for name in names) is (policy == "mixed_float16")


def test_an_xla_compiled_gan_step_computes_what_the_plain_one_does(shapes_data):
    """The tiny DF-GAN phase from the same seed and batch, with and without jit_compile. XLA draws a different stream
    from the same tf.random.Generator state (its Philox sampling differs), so the generated images differ; the
    discriminator terms on real pairs, which the noise does not reach, must agree, and both steps must train."""
    from t2ictl import bench

    results = []
    for xla in (False, True):
        step = bench.train_step(tiny_recipe(shapes_data, f"runtime.xla={str(xla).lower()}"))
        start = [w.numpy() for w in step.phase.generator.trainable_weights]
        first = step.run_steps(1)
        second = step.run_steps(1)
        moved = max(float(np.abs(w.numpy() - s).max()) for w, s in zip(step.phase.generator.trainable_weights, start))
        results.append((first, second, moved))
    (plain, plain_second, plain_moved), (xla, xla_second, xla_moved) = results
    for name in ("d_real", "d_mismatch", "d_ma_gp"):
        assert xla[name] == pytest.approx(plain[name], rel=1e-4, abs=1e-7), name
    assert xla.keys() == plain.keys()
    assert np.all(np.isfinite(list(xla.values()) + list(xla_second.values())))
    assert xla_moved > 1e-4 and plain_moved > 1e-4
