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


STEPS_PER_EPOCH = 8  # shapes_data: 256 training images, 16 + 16 per step


def test_mixed_precision_runs_train_and_resume_in_another_precision(short_run, shapes_data, tmp_path, capsys):
    """The tiny GAN phase an epoch under each policy in turn, each resumed from the last: finite losses, the step and
    Adam's state go on, a float16 run saves its loss scale beside Adam's state, and a float16 run resumed from a
    checkpoint without one (the third epoch, not the first, which starts the run) starts the loss scale afresh and
    says so. (float32 resumes from float32 in every other test.)"""
    policies = ("mixed_float16", "mixed_bfloat16", "mixed_float16")
    shutil.copytree(short_run.path / "encoders", tmp_path / "run" / "encoders")
    shutil.copyfile(short_run.path / "vocab.json", tmp_path / "run" / "vocab.json")
    iterations = []
    try:
        for epochs, policy in enumerate(policies, start=1):
            recipe = tiny_recipe(shapes_data, f'runtime.precision="{policy}"', f"train.epochs={epochs}",
                                 "train.log_every=2")
            run = open_run(tmp_path / "run", recipe, shapes_data, "train", resume=epochs > 1)
            gan.train(recipe, shapes_data, manifest_of(shapes_data), run)
            reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(run.checkpoints("train"))))
            names = reader.get_variable_to_shape_map()
            iterations.append(int(reader.get_tensor(next(n for n in names if n.startswith("g_optimizer/")
                                                         and "iterations" in n))))
            assert any(n.startswith("g_optimizer_loss_scale") for n in names) is (policy == "mixed_float16")
    finally:
        distribute.set_precision("float32")
    assert iterations == [STEPS_PER_EPOCH * epochs for epochs in range(1, len(policies) + 1)]  # Adam's count went on
    losses = scalars(run, "g_loss") + scalars(run, "d_loss") + scalars(run, "supcon")
    assert len(losses) >= 3 * len(policies) * STEPS_PER_EPOCH // 2 and np.all(np.isfinite(losses))
    logged = logged_steps(run, "g_loss")  # each resumed where the last stopped, not from step 0
    assert logged == list(range(2, len(policies) * STEPS_PER_EPOCH + 1, 2))
    out = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    for before, after in zip(policies, policies[1:]):
        assert f"runtime.precision = '{after}' (was '{before}')" in out
    assert out.count("the loss scale starts afresh") == 1


def test_an_xla_compiled_gan_step_computes_what_the_plain_one_does(shapes_data):
    """The tiny DF-GAN phase from the same seed and batch, with and without jit_compile. The noise is a stateless draw
    keyed by the step, so both compile the same noise: the discriminator terms on real pairs agree closely, the one on
    generated images within XLA's fused rounding, and both steps train."""
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
    assert xla["d_fake"] == pytest.approx(plain["d_fake"], rel=1e-3)  # 5e-5 apart here
    assert xla.keys() == plain.keys()
    assert np.all(np.isfinite(list(xla.values()) + list(xla_second.values())))
    assert xla_moved > 1e-4 and plain_moved > 1e-4
