"""Every backbone, and the pretraining, computes the same run on one device and on two replicas: the mismatched pairs,
DAMSM's in-batch negatives, GALIP's alignment and the batch norms see the global batch in one-device order
(t2ictl.replicas), and the noise and dropout masks are drawn over it. Checked by training on 1 device and on 2 logical
CPUs from the same start: the pretraining here, each backbone's GAN phase in test_backbones_train."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import tensorflow as tf
from conftest import checkpoint_differences

from t2ictl import replicas

BOTH_LAYOUTS = textwrap.dedent("""
    import json, shutil, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, sys.argv[1])
    from pathlib import Path
    from conftest import TINY, manifest_of
    from t2ictl import recipes
    from t2ictl.runs import open_run
    from t2ictl.training import gan, pretrain

    data, encoders, out = Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
    recipe_name, sets, phase = sys.argv[5], json.loads(sys.argv[6]), sys.argv[7]
    for strategy in ("default", "mirrored"):
        run = out / strategy
        common = [item for item in TINY if not item.startswith("model.")]
        recipe = recipes.load_recipe(recipe_name, common + [f'data.dir="{data}"', f'runtime.strategy="{strategy}"',
                                                            f"{phase}.log_every=1", *sets])
        if phase == "train":
            shutil.copytree(encoders / "encoders", run / "encoders")
            shutil.copyfile(encoders / "vocab.json", run / "vocab.json")
            gan.train(recipe, data, manifest_of(data), open_run(run, recipe, data, "train", resume=False))
        else:
            pretrain.pretrain(recipe, data, manifest_of(data), open_run(run, recipe, data, "pretrain", resume=False))
""")
LOSSES = ("d_loss", "d_mismatch", "g_loss", "supcon", "loss", "damsm_words", "damsm_sentence")


def test_one_device_and_two_replicas_pretrain_the_same_run(few_steps_data, tmp_path):
    """DAMSM's negatives, SupCon's pairs, the text encoder's dropout masks and the clipping of its gradient by their
    global norm are those of the whole batch (before, each replica drew its own dropout mask and clipped its own
    gradient, and Keras's Adam squared the embedding's sparse gradient per occurrence, which halved its second moment
    on two replicas)."""
    train_on_both_layouts(few_steps_data, tmp_path, tmp_path, "shapes", ["pretrain.epochs=1"], "pretrain")
    assert_same_run(tmp_path, "pretrain")


def train_on_both_layouts(data, encoders, out, recipe_name: str, sets: list[str], phase: str) -> None:
    arguments = [os.path.dirname(__file__), str(data), str(encoders), str(out), recipe_name, json.dumps(sets), phase]
    result = subprocess.run([sys.executable, "-c", BOTH_LAYOUTS, *arguments], capture_output=True, text=True,
                            timeout=900, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "replicas: 2" in " ".join(result.stdout.split())


def assert_same_run(out, phase: str) -> None:
    one, two = (logged(out / strategy, phase) for strategy in ("default", "mirrored"))
    assert one.keys() & set(LOSSES)
    for tag in (t for t in LOSSES if t in one):
        np.testing.assert_allclose(two[tag][0], one[tag][0], rtol=5e-5, err_msg=tag)  # the first step
    assert "g_damsm_words" not in one or abs(two["g_damsm_words"][0] / one["g_damsm_words"][0] - 1) < 5e-5
    single, mirrored = (last_checkpoint(out / strategy, phase) for strategy in ("default", "mirrored"))
    differences = checkpoint_differences(single, mirrored)
    # Adam's first steps move a parameter whose gradient is near zero by about its learning rate either way, so the
    # rounding grows in the next gradients and most in the optimizers' moments (beside the test suite, where the two
    # replicas sum in another order at times: AttnGAN's generator moments 4e-2 on a scale of 3, SSA-GAN's scalar
    # gates 8e-3, every weight within 4e-4): the median covers every float, the largest difference the models'
    # variables only
    median = np.median(list(differences.values()))
    largest = max(d for name, d in differences.items() if "optimizer" not in name)
    assert median < 5e-5 and largest < 2e-2, (median, largest)


def logged(run, phase: str) -> dict[str, list[float]]:
    values = {}
    for path in sorted((run / "logs" / phase).glob("events.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                values.setdefault(value.tag, []).append(float(tf.make_ndarray(value.tensor)))
    return values


def last_checkpoint(run, phase: str) -> dict[str, np.ndarray]:
    path = tf.train.latest_checkpoint(str(run / "checkpoints" / phase))
    reader = tf.train.load_checkpoint(path)
    return {n: np.asarray(reader.get_tensor(n)) for n in reader.get_variable_to_shape_map()
            if n != "_CHECKPOINTABLE_OBJECT_GRAPH"}


def test_the_global_batch_in_one_device_order_and_back():
    """On one replica every function is the identity (roll aside); the regrouping itself checked against NumPy."""
    x = tf.reshape(tf.range(24, dtype=tf.float32), [12, 2])
    assert replicas.layout() == (0, 1)
    np.testing.assert_array_equal(replicas.gather(x, blocks=2), x)
    np.testing.assert_array_equal(replicas.local_rows(x, blocks=2), x)
    np.testing.assert_array_equal(replicas.roll(x, -1, blocks=2), np.roll(x.numpy(), -1, axis=0))
    swapped = replicas._swap_leading(x, 2, 3)  # [2 blocks x 3 replicas x 2 rows] -> [3 x 2 x 2]
    expected = x.numpy().reshape(2, 3, 2, 2).transpose(1, 0, 2, 3).reshape(12, 2)
    np.testing.assert_array_equal(swapped, expected)
    np.testing.assert_array_equal(replicas._swap_leading(swapped, 3, 2), x)
