"""The shared training loop with a toy phase: exact resume, checkpoint errors, non-finite losses."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from t2ictl.errors import UserError
from t2ictl.training import loop
from t2ictl.runs import RunDir


class ToyPhase(loop.Phase):
    name = "toy"
    images_per_step = 4

    def __init__(self, learning_rate=0.05, poison_at=None):
        self.learning_rate, self.poison_at = learning_rate, poison_at
        self.evaluations = 0

    def build(self):
        keras.utils.set_random_seed(0)
        self.model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="tanh"),
                                       keras.layers.Dense(1)])
        self.optimizer = keras.optimizers.Adam(self.learning_rate)
        self.optimizer.build(self.model.trainable_variables)
        self.average = tf.Variable(tf.zeros([]), trainable=False)

    def trackables(self):
        return {"model": self.model, "optimizer": self.optimizer, "average": self.average}

    def train_step(self, batch):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((self.model(batch["x"]) - batch["y"]) ** 2)
        grads = tape.gradient(loss, self.model.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
        if self.poison_at is not None:
            loss = tf.where(self.optimizer.iterations >= self.poison_at, tf.constant(np.nan), loss)
        return {"loss": loss}

    def after_step(self):
        self.average.assign(0.9 * self.average + 0.1 * self.model.trainable_variables[0][0, 0])

    def evaluate(self):
        self.evaluations += 1
        return {"evaluations": float(self.evaluations)}


def toy_dataset(start_step, context):
    def batch(step):
        x = tf.random.stateless_normal([4, 3], seed=tf.stack([step, tf.constant(7, tf.int64)]))
        return {"x": x, "y": tf.reduce_sum(x, axis=1, keepdims=True)}

    return tf.data.Dataset.range(start_step, 1 << 40).map(batch)


def schedule(total):
    return loop.Schedule(total_steps=total, steps_per_epoch=5, log_every=2, checkpoint_every=3, keep_checkpoints=2)


def weights(phase):
    return [w.numpy() for w in phase.model.weights] + [phase.average.numpy()]


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path):
    straight = ToyPhase()
    loop.run(straight, toy_dataset, RunDir(tmp_path / "straight"), schedule(12))
    first = ToyPhase()
    loop.run(first, toy_dataset, RunDir(tmp_path / "split"), schedule(7))
    resumed = ToyPhase()
    loop.run(resumed, toy_dataset, RunDir(tmp_path / "split"), schedule(12))
    assert int(resumed.optimizer.iterations.numpy()) == 12
    for a, b in zip(weights(straight), weights(resumed)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert straight.evaluations == 3  # epochs end at steps 5, 10 and the last step
    kept = tf.train.get_checkpoint_state(str(tmp_path / "split" / "checkpoints" / "toy")).all_model_checkpoint_paths
    assert len(kept) == 2


def test_loss_decreases(tmp_path):
    phase = ToyPhase()
    data = toy_dataset(0, None).take(1).get_single_element()
    phase.build()
    before = float(tf.reduce_mean((phase.model(data["x"]) - data["y"]) ** 2))
    phase = ToyPhase()
    loop.run(phase, toy_dataset, RunDir(tmp_path / "run"), schedule(60))
    after = float(tf.reduce_mean((phase.model(data["x"]) - data["y"]) ** 2))
    assert after < 0.5 * before


def test_finished_run_trains_nothing(tmp_path):
    loop.run(ToyPhase(), toy_dataset, RunDir(tmp_path), schedule(4))
    again = ToyPhase()
    assert loop.run(again, toy_dataset, RunDir(tmp_path), schedule(4)) == {}
    assert int(again.optimizer.iterations.numpy()) == 4


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    loop.run(ToyPhase(), toy_dataset, RunDir(tmp_path), schedule(3))
    data_files = list((tmp_path / "checkpoints" / "toy").glob("ckpt-3.data-*"))
    assert data_files
    for path in data_files:
        path.write_bytes(b"garbage")
    with pytest.raises(UserError, match="cannot restore checkpoint"):
        loop.run(ToyPhase(), toy_dataset, RunDir(tmp_path), schedule(6))


def test_non_finite_loss_stops_with_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="loss loss became nan at step 4"):
        loop.run(ToyPhase(poison_at=3), toy_dataset, RunDir(tmp_path), schedule(10))


def test_eval_every_spaces_the_evaluations_and_their_checkpoints(tmp_path):
    """Epochs of 5 steps, an evaluation every 2nd epoch (steps 10, 20) and at the last step (23); checkpoints at those
    steps and every checkpoint_every = 3 steps."""
    phase = ToyPhase()
    spaced = loop.Schedule(total_steps=23, steps_per_epoch=5, log_every=2, checkpoint_every=3, keep_checkpoints=100,
                           eval_every=2)
    loop.run(phase, toy_dataset, RunDir(tmp_path), spaced)
    assert phase.evaluations == 3
    state = tf.train.get_checkpoint_state(str(tmp_path / "checkpoints" / "toy"))
    saved = sorted(int(path.rsplit("-", 1)[1]) for path in state.all_model_checkpoint_paths)
    assert saved == [3, 6, 9, 10, 12, 15, 18, 20, 21, 23]


class FailingReportPhase(ToyPhase):
    def report(self, step):
        raise OSError(f"disk full while writing the sample grid of step {step}")


def test_a_failing_report_loses_no_steps(tmp_path):
    """The checkpoint of a step is written before that step's report, so a failing report keeps the steps it ends."""
    reporting = loop.Schedule(total_steps=10, steps_per_epoch=5, log_every=2, checkpoint_every=3, keep_checkpoints=5,
                              report_every=6)
    with pytest.raises(OSError, match="step 6"):
        loop.run(FailingReportPhase(), toy_dataset, RunDir(tmp_path), reporting)
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints" / "toy")).endswith("ckpt-6")
