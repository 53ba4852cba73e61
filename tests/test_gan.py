"""Phase 2: the contrastive GAN on DF-GAN, sampling, export, exact resume, and the README's main job end to end."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import prepare_shapes, scalars, tiny_recipe, trained_run

from t2ictl import runs
from t2ictl.errors import UserError
from t2ictl.evaluation.consistency import held_out
from t2ictl.runs import RunDir


@pytest.fixture(scope="module")
def few_shapes(tmp_path_factory):
    """A handful of examples to overfit: 20 images (16 train, one paired step of 8 + 8)."""
    return prepare_shapes(tmp_path_factory.mktemp("few") / "shapes", 20)


def colour_match_error(sampler, data_dir, recipe, vocab) -> float:
    """Mean absolute difference (0-255) of the mean RGB of each generated image and of the real image its caption
    describes, over the training images: the background and the shape's colour, as the caption asks for them."""
    captions, real = held_out(data_dir, recipe, vocab, 64, split="train")
    generated = sampler.sample(captions, per_caption=1, seed=0)[:, 0]
    mean_rgb = lambda images: images.reshape(len(images), -1, 3).astype(float).mean(axis=1)  # noqa: E731
    return float(np.abs(mean_rgb(generated) - mean_rgb(real)).mean())


def untrained_sampler(run: RunDir):
    """A sampler over the run's generator as built, before any step."""
    from t2ictl.sampling import Sampler

    recipe = run.recipe()
    encoders, info = runs.load_encoders(run.encoders_for(recipe), recipe)
    backbone = runs.build_backbone(recipe, encoders, info["text_dim"])
    return Sampler(backbone.build_generator(), encoders.text, run.vocab(), recipe.data.max_words, backbone.noise_dim)


def test_a_tiny_model_overfits_a_handful_of_examples(few_shapes, tmp_path):
    overrides = ("model.nf=8", "data.batch_size=8", "pretrain.epochs=60", "pretrain.eval_every=30", "train.epochs=150",
                 "train.log_every=10", "train.ema_decay=0.9", "train.eval_every=100")
    recipe = tiny_recipe(few_shapes, *overrides)
    trained = trained_run(few_shapes, tmp_path / "run", *overrides)
    after = colour_match_error(runs.open_generator(trained)[0], few_shapes, recipe, trained.vocab())
    before = colour_match_error(untrained_sampler(trained), few_shapes, recipe, trained.vocab())
    assert after < 0.9 * before, (before, after)
    supcon = scalars(trained, "supcon")
    quarter = len(supcon) // 4
    assert np.mean(supcon[-quarter:]) < np.mean(supcon[:quarter]), supcon
    evaluations = [scalars(trained, "eval/text_to_image_r1", "pretrain"), scalars(trained, "eval/shape_accuracy")]
    assert [len(values) for values in evaluations] == [2, 2]  # every eval_every-th epoch of each phase


def test_same_seed_same_images_other_caption_other_images(short_run):
    sampler, _, _ = runs.open_generator(short_run)
    captions = ["a large red circle on the left on a white background", "a small blue square on the right"]
    first = sampler.sample(captions, per_caption=3, seed=7)
    again = sampler.sample(captions, per_caption=3, seed=7)
    other_seed = sampler.sample(captions, per_caption=3, seed=8)
    assert first.shape == (2, 3, 32, 32, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, again)
    assert np.abs(first.astype(int) - other_seed).mean() > 0.5
    assert np.abs(first[0].astype(int) - first[1]).mean() > 0.5  # same noise rows, other caption


def test_sampling_refuses_empty_and_unknown_only_captions(short_run):
    sampler, _, _ = runs.open_generator(short_run)
    with pytest.raises(UserError, match="no words"):
        sampler.sample(["  "], per_caption=1, seed=0)
    with pytest.raises(UserError, match="only words the model does not know"):
        sampler.sample(["zyzzyva qwerty"], per_caption=1, seed=0)


def test_the_exported_model_equals_the_in_process_generator(short_run, tmp_path):
    from t2ictl import sampling
    from t2ictl.export import export_run

    out = export_run(short_run.path, tmp_path / "model")
    sampler, _, _ = runs.open_generator(short_run)
    captions = ["a large red circle on the left", "a small green triangle in the middle on black"]
    expected = sampler.sample(captions, per_caption=2, seed=3)
    z = sampling.noise(4, sampler.noise_dim, 3).numpy()
    np.save(tmp_path / "z.npy", z)
    script = f"""
import sys, json, numpy as np
sys.modules["t2ictl"] = None  # prove the model needs no t2ictl
import tensorflow as tf, tensorflow_hub as hub
captions = tf.constant({[c for c in captions for _ in range(2)]!r})
model = tf.saved_model.load({str(out)!r})
seeded = model.signatures["serving_default"](captions=captions, seed=tf.constant(3, tf.int64),
                                             truncation=tf.constant(0.0))["images"].numpy()
noised = model.signatures["with_noise"](captions=captions, noise=tf.constant(np.load({str(tmp_path / 'z.npy')!r})))
hub_model = hub.load({str(out)!r})
again = hub_model.signatures["serving_default"](captions=captions, seed=tf.constant(3, tf.int64),
                                                truncation=tf.constant(0.0))["images"].numpy()
np.save({str(tmp_path / 'seeded.npy')!r}, seeded)
np.save({str(tmp_path / 'noised.npy')!r}, noised["images"].numpy())
np.save({str(tmp_path / 'hub.npy')!r}, again)
"""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    flat = expected.reshape(4, *expected.shape[2:])
    for name in ("seeded", "noised", "hub"):
        exported = np.load(tmp_path / f"{name}.npy")
        assert exported.dtype == np.uint8 and exported.shape == flat.shape
        assert np.abs(exported.astype(int) - flat).max() <= 1, name  # rounding at .5 may differ by one level


def generator_weights(run: RunDir) -> list[np.ndarray]:
    sampler, _, _ = runs.open_generator(run)
    return sampler.generator.get_weights()


def test_train_n_plus_m_equals_train_n_then_resume_m(short_run, two_epoch_run, shapes_data, tmp_path):
    """The shared run (1 epoch) resumed for a second epoch, against 2 epochs unbroken on the same encoders."""
    shutil.copytree(short_run.path, tmp_path / "resumed")
    resumed = trained_run(shapes_data, tmp_path / "resumed", "train.epochs=2", resume=True)
    for a, b in zip(generator_weights(two_epoch_run), generator_weights(resumed)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_mode_seeking_is_logged_and_the_evaluation_measures_variation(short_run, shapes_data, tmp_path):
    shutil.copytree(short_run.path / "encoders", tmp_path / "seeking" / "encoders")
    shutil.copyfile(short_run.path / "vocab.json", tmp_path / "seeking" / "vocab.json")
    run = trained_run(shapes_data, tmp_path / "seeking", "train.mode_seeking_weight=1.0")
    values = scalars(run, "mode_seeking")
    assert values and all(0 < v < 1e5 for v in values)  # 1 / (image gap / noise gap + 1e-5)
    assert not scalars(short_run, "mode_seeking")
    for tag in ("variation", "real_variation", "variation_ratio", "shape_accuracy"):
        assert scalars(run, f"eval/{tag}"), tag


def test_contrastive_off_trains_the_plain_backbone_on_unpaired_batches(shapes_data, tmp_path, monkeypatch):
    from t2ictl.training import gan

    batches = []  # the structure of every batch the step is traced with
    real_step = gan.GANPhase.train_step

    def recording_step(self, batch):
        batches.append({key: tuple(value.shape) for key, value in batch.items()})
        return real_step(self, batch)

    monkeypatch.setattr(gan.GANPhase, "train_step", recording_step)
    run = trained_run(shapes_data, tmp_path / "plain", "contrastive.enabled=false")
    assert scalars(run, "g_loss") and not scalars(run, "supcon")
    assert batches, "the step never ran"
    for batch in batches:
        assert "a" not in batch and "b" not in batch, "contrastive off still pairs the batches"
        assert batch["tokens"][0] in (16, None) and batch["image"][1:] == (32, 32, 3)


def t2ictl(*args, cwd):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "t2ictl", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=900)


def test_the_readme_main_job_end_to_end_at_tiny_size(tmp_path):
    """README: prepare shapes, train (pretraining first), sample, export; here with 80 images and tiny widths, at the
    recipe's own precision (`auto`: bfloat16 on a CPU with AVX-512 BF16) and mode seeking, as the README's command runs
    it. (That a second process repeats a run's figures: test_experiment's killed grid and test_golden's pin.)"""
    from conftest import TINY

    # the recipe's own precision, mode seeking and rates
    own = ("runtime.", "train.mode_seeking_weight", "model.g_lr", "model.d_lr")
    sets = [arg for item in TINY if not item.startswith(own) for arg in ("--set", item)]
    sets += ["--set", "train.log_every=1", "--set", "pretrain.log_every=1"]
    steps = [
        ["prepare", "shapes", "--count", "80", "--image-size", "32"],
        ["train", "--recipe", "shapes", *sets],
        ["sample", "a large red circle on the left", "a small blue square", "--run", "runs/shapes", "-n", "3",
         "--out", "samples.png"],
        ["export", "--run", "runs/shapes", "--out", "model"],
    ]
    for step in steps:
        result = t2ictl(*step, cwd=tmp_path)
        assert result.returncode == 0, (step, result.stderr[-3000:])
    grid = tf.io.decode_png((tmp_path / "samples.png").read_bytes()).numpy()
    # 32 px images enlarged 3x; the first caption wraps to two lines of scale-2 text in 3 * 98 px
    assert grid.shape == (2 * (2 * (4 + 2 * 10) + 3 * 32 + 2) + 2, 3 * (3 * 32 + 2) + 2, 3)
    assert (tmp_path / "runs" / "shapes" / "encoders" / "encoders.json").exists()
    assert (tmp_path / "model" / "saved_model.pb").exists()
    logged = logged_numbers(tmp_path / "runs/shapes")
    expected = {"pretrain/loss", "train/g_loss", "train/mode_seeking", "train/eval/shape_accuracy"}
    assert expected <= set(logged), sorted(logged)
    assert len(logged["train/g_loss"]) >= 2 and all(np.isfinite(v).all() for v in logged.values())


def logged_numbers(run_path) -> dict[str, list[float]]:
    """Every scalar both phases logged, by phase and tag, except the timing."""
    numbers = {}
    for events in sorted(run_path.glob("logs/*/events.*")):
        for event in tf.compat.v1.train.summary_iterator(str(events)):
            for value in event.summary.value:
                if value.tag != "images_per_second":
                    key = f"{events.parent.name}/{value.tag}"
                    numbers.setdefault(key, []).append(float(tf.make_ndarray(value.tensor)))
    return numbers


