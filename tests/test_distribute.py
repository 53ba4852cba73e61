"""tf.distribute on CPU: two logical CPU devices for MirroredStrategy, two worker processes on 127.0.0.1 for
MultiWorkerMirroredStrategy. Each runs in a fresh process, because devices and cluster must be set before TensorFlow
starts."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY, checkpoint_differences

EQUIVALENCE = textwrap.dedent("""
    import json, sys
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from t2ictl import recipes
    from t2ictl.training import branches, distribute

    recipe = recipes.load_recipe("shapes", [])
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(8, 5)).astype(np.float32)
    batch = {"class_id": np.array([0, 1, 2, 0, 1, 2, 3, 3], np.int32),
             "labels": np.zeros((8, 4), np.float32), "example_key": np.arange(8, dtype=np.int64) % 6}
    kernel = rng.normal(size=(5, 6)).astype(np.float32)

    def run(strategy):
        with strategy.scope():
            model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(6, use_bias=False)])
            model.layers[0].kernel.assign(kernel)
        replicas = strategy.num_replicas_in_sync
        per = 8 // replicas

        def shard(context):
            i = context.replica_id_in_sync_group
            return (inputs[i * per:(i + 1) * per], {k: v[i * per:(i + 1) * per] for k, v in batch.items()})

        values = strategy.experimental_distribute_values_from_function(shard)

        @tf.function
        def step(values):
            def replica(x, merged):
                with tf.GradientTape() as tape:
                    loss = branches.contrastive_loss(model(x), merged, recipe, False, 0.5)
                    scaled = loss / tf.distribute.get_strategy().num_replicas_in_sync
                return loss, tape.gradient(scaled, model.trainable_variables)[0]
            loss, grad = strategy.run(replica, args=values)
            return (strategy.reduce("MEAN", loss, axis=None), strategy.reduce("SUM", grad, axis=None))

        loss, grad = step(values)
        return float(loss), grad.numpy()

    one = run(tf.distribute.OneDeviceStrategy("/cpu:0"))
    mirrored = distribute.make_strategy("mirrored")
    two = run(mirrored)
    json.dump({"replicas": mirrored.num_replicas_in_sync, "loss": [one[0], two[0]],
               "grad_diff": float(np.abs(one[1] - two[1]).max()), "grad_norm": float(np.abs(one[1]).max())},
              open(sys.argv[1], "w"))
""")


def python(script, *args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})})


def test_two_replicas_give_the_loss_and_gradients_of_one_on_the_global_batch(tmp_path):
    result = python(EQUIVALENCE, str(tmp_path / "out.json"))
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["replicas"] == 2
    assert out["loss"][0] == pytest.approx(out["loss"][1], rel=1e-5)
    assert out["grad_norm"] > 1e-3 and out["grad_diff"] < 1e-5 * max(1.0, out["grad_norm"])


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_pretrain_on_two_mirrored_cpu_devices_then_moves_to_one(shapes_data, tmp_path):
    """A pretraining run on two logical CPUs resumed on one device: the step and Adam's state go on; resumed with
    another global batch, it is refused with the reason."""
    script = textwrap.dedent("""
        import sys, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from t2ictl.cli import main
        main(sys.argv[1:])
    """)
    args = ["pretrain", "--recipe", "shapes", "--data", str(shapes_data), "--run-dir", str(tmp_path / "run"),
            *sum((["--set", s] for s in TINY), [])]
    result = python(script, *args, "--strategy", "mirrored", "--set", "pretrain.epochs=1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 replicas" in result.stdout or "replicas: 2" in result.stdout, result.stdout[-2000:]
    assert (tmp_path / "run" / "encoders" / "encoders.json").exists()
    moved = python(script, *args, "--strategy", "default", "--set", "pretrain.epochs=2", "--resume")
    assert moved.returncode == 0, moved.stderr[-3000:]
    out = " ".join(moved.stdout.split())
    assert "resuming with runtime.strategy = 'default' (was 'mirrored')" in out and "replicas: 1" in out
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints" / "pretrain")))
    name = next(n for n in reader.get_variable_to_shape_map() if n.startswith("optimizer/") and "iterations" in n)
    assert int(reader.get_tensor(name)) == 2 * 8  # two epochs of 8 steps (256 images, 16 + 16 a step)
    refused = python(script, *args, "--set", "data.batch_size=8", "--set", "pretrain.epochs=3", "--resume")
    assert refused.returncode == 2 and "split over the replicas" in refused.stderr.splitlines()[-1]


def run_two_workers(shapes_data, run_dirs, *settings, resume=False, succeed=True) -> list[str]:
    """Pretrain the tiny recipe on a cluster of two worker processes on 127.0.0.1; each worker's stdout (with
    succeed=False: each worker's stderr, and both must fail)."""
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    overrides = sum((["--set", s] for s in TINY + ["pretrain.checkpoint_every=4", *settings]), [])
    workers = []
    for index, run_dir in enumerate(run_dirs):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
               "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        command = [sys.executable, "-m", "t2ictl", "pretrain", "--recipe", "shapes", "--data", str(shapes_data),
                   "--run-dir", str(run_dir), "--strategy", "multiworker", *overrides, *(["--resume"] * resume)]
        workers.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    outputs = [w.communicate(timeout=600) for w in workers]
    if not succeed:
        assert all(worker.returncode == 2 for worker in workers), [err[-2000:] for _, err in outputs]
        return [err for _, err in outputs]
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-3000:]
    return [out for out, _ in outputs]


def checkpoint_values(folder) -> dict[str, np.ndarray]:
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(folder)))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if "OPTIMIZER_SLOT" not in name and name != "_CHECKPOINTABLE_OBJECT_GRAPH"}


def test_multiworker_pretrain_on_loopback_resumes_after_the_workers_restart(shapes_data, short_run, tmp_path):
    """Two workers on 127.0.0.1 pretrain one epoch; only the chief writes. Resumed from separate run directories (no
    shared file system), the chief finds its checkpoint and the other worker none: training on would mix two models
    under one averaged gradient, so both stop and say why. Resumed on a shared run directory, as a cluster's shared
    file system gives, they continue from the chief's checkpoint and end where an unbroken run on one device ends
    (short_run's pretraining: the same recipe and data)."""
    broken, other = tmp_path / "broken", tmp_path / "other"
    run_two_workers(shapes_data, [broken, other], "pretrain.epochs=1")
    assert list((broken / "checkpoints" / "pretrain").glob("ckpt-*.index")), "the chief wrote no checkpoint"
    assert (broken / "encoders" / "encoders.json").exists()
    assert not list(other.rglob("ckpt-*.index")) and not list(other.glob("checkpoints/.*")), "the other wrote files"
    errors = run_two_workers(shapes_data, [broken, other], "pretrain.epochs=2", resume=True, succeed=False)
    for err in errors:
        assert "the workers restored different checkpoints" in err and "Traceback" not in err, err[-2000:]
    steps = int(tf.train.latest_checkpoint(str(broken / "checkpoints" / "pretrain")).rsplit("-", 1)[1])
    outputs = run_two_workers(shapes_data, [broken, broken], "pretrain.epochs=2", resume=True)
    for out in outputs:
        assert f"at step {steps}" in out, out[-2000:]
    assert not list(broken.glob("checkpoints/.*")), "a non-chief scratch folder was left behind"
    expected, resumed = (checkpoint_values(run / "checkpoints" / "pretrain") for run in (short_run.path, broken))
    assert int(resumed["step/.ATTRIBUTES/VARIABLE_VALUE"]) == 2 * steps
    differences = checkpoint_differences(expected, resumed)
    assert any("image_encoder" in name for name in differences) and any("optimizer" in name for name in differences)
    # the workers sum their halves in another order than one device; Adam grows that where a gradient is near zero
    median, largest = np.median(list(differences.values())), max(differences.values())
    assert median < 1e-5 and largest < 2e-2, (median, largest)  # 2e-7 and 5e-5 on an idle machine
