import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import functools  # noqa: E402
import http.server  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_collection_modifyitems(items):
    """The slowest test files first, so that the two workers end together instead of one running the longest file
    alone at the end (pytest-xdist hands out files in this order: pyproject.toml turns its own reordering off).
    Files not yet measured count as the slowest; benchmarks/file_seconds.py writes tests/file_seconds.json anew."""
    seconds = json.loads((Path(__file__).with_name("file_seconds.json")).read_text())
    items.sort(key=lambda item: -seconds.get(item.path.name, float("inf")))


@pytest.fixture(autouse=True)
def float32_policy():
    """Every test starts under Keras's float32 dtype policy. Training sets the process-wide policy from
    runtime.precision (`auto` is bfloat16 on a CPU with AVX-512 BF16), and a command's process ends with it; in a test
    worker it would carry over, from a fixture or an earlier file, into the models of the next test."""
    if "keras" in sys.modules:
        sys.modules["keras"].mixed_precision.set_global_policy("float32")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data other people placed beside the checkout; tests using it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"no real data at {SHARED_DATA}")
    return SHARED_DATA


def prepare_shapes(out: Path, count: int, image_size: int = 32, multi_object: bool = False, seed: int = 0) -> Path:
    from t2ictl.data.prepare import PrepareOptions, Preparer
    from t2ictl.data.sources import open_source

    name = "shapes-multi" if multi_object else "shapes"
    source = open_source(name, [], count=count, seed=seed, image_size=image_size)
    Preparer(source, out, PrepareOptions(shard_size=64)).run()
    return out


@pytest.fixture(scope="session")
def shapes_data(tmp_path_factory) -> Path:
    """A small prepared single-object shapes dataset (read only): 320 images of 32 px, 256 train / 64 test."""
    return prepare_shapes(tmp_path_factory.mktemp("data") / "shapes", 320)


@pytest.fixture(scope="session")
def shapes_multi_data(tmp_path_factory) -> Path:
    """A small prepared multi-object shapes dataset (read only): 160 images of 32 px."""
    return prepare_shapes(tmp_path_factory.mktemp("data") / "shapes-multi", 160, multi_object=True)


@pytest.fixture(scope="session")
def few_steps_data(tmp_path_factory) -> Path:
    """80 shapes images: 64 to train on, 2 steps of 16 + 16 per epoch (read only)."""
    return prepare_shapes(tmp_path_factory.mktemp("data") / "few-steps", 80)


SHAPES_RATES = ["model.g_lr=0.0004", "model.d_lr=0.0004"]
TINY = [
    "data.batch_size=16", "pretrain.epochs=2", "pretrain.text_dim=32", "pretrain.embedding_dim=16",
    "pretrain.small_trunk_width=8", "pretrain.eval_examples=64", "pretrain.log_every=4",
    "pretrain.checkpoint_every=1000", "model.nf=4", "train.epochs=1", "train.log_every=4",
    "train.checkpoint_every=1000", "train.sample_every=1000", "train.sample_captions=2",
    "runtime.precision=float32",  # the recipes' `auto` is bfloat16 on CPUs with AVX-512 BF16; tests compare numbers
    # the shapes recipe's evaluation every 4th epoch and mode seeking put back at the defaults the tests' numbers were
    # written on (the README job's test runs the recipe's own; test_gan tests mode seeking)
    "train.eval_every=1", "train.mode_seeking_weight=0",
    # and the embedded recipes' rates before 2026-12-07; tests that drop the model keys set them again
    *SHAPES_RATES,
]


def tiny_recipe(data_dir: Path, *overrides: str, name: str = "shapes"):
    """The embedded recipe shrunk for tests (tiny widths, two short epochs), reading `data_dir`."""
    from t2ictl import recipes

    return recipes.load_recipe(name, TINY + [f'data.dir="{data_dir}"', *overrides])


def manifest_of(data_dir):
    import json

    return json.loads((data_dir / "manifest.json").read_text())


def trained_run(data_dir, run_path, *overrides, resume=False):
    """Pretrain (if the run has no encoders yet) and train the GAN phase of the tiny recipe; the RunDir."""
    from t2ictl.training import gan
    from t2ictl.training.pretrain import pretrain
    from t2ictl.runs import open_run

    recipe = tiny_recipe(data_dir, *overrides)
    if not (run_path / "encoders" / "encoders.json").exists():
        run = open_run(run_path, recipe, data_dir, "pretrain", resume=False)
        pretrain(recipe, data_dir, manifest_of(data_dir), run)
    run = open_run(run_path, recipe, data_dir, "train", resume=resume)
    gan.train(recipe, data_dir, manifest_of(data_dir), run)
    return run


def scalars(run, tag: str, phase: str = "train") -> list[float]:
    """The values of one TensorBoard scalar a run's phase logged, in order."""
    import tensorflow as tf

    values = []
    for path in sorted(run.logs(phase).glob("events.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag == tag:
                    values.append(float(tf.make_ndarray(value.tensor)))
    return values


def alternating_gan_step(backbone, real: dict, noise, text):
    """A tf.function train step as the GAN phase takes it, on fixed inputs: the discriminator steps on the fakes cut
    from the generator's graph, then the generator steps against the updated discriminator. Returns (D, G) terms."""
    import tensorflow as tf

    from t2ictl.training.gan import build_optimizers

    g_vars, d_vars = backbone.generator.trainable_variables, backbone.discriminator_variables
    g_optimizer, d_optimizer = build_optimizers(backbone)
    inputs = text.generator_inputs(noise)

    @tf.function
    def step():
        with tf.GradientTape() as g_tape:
            generated = backbone.generator(inputs, training=True)
            with g_tape.stop_recording(), tf.GradientTape() as d_tape:
                d_terms = backbone.discriminator_loss(real, [tf.stop_gradient(x) for x in generated["images"]], text)
            d_optimizer.apply_gradients(zip(d_tape.gradient(d_terms["loss"], d_vars), d_vars))
            g_terms = backbone.generator_loss(generated, text, None)
        g_optimizer.apply_gradients(zip(g_tape.gradient(g_terms["loss"], g_vars), g_vars))
        return d_terms, g_terms

    return step


@pytest.fixture(scope="session")
def short_run(shapes_data, tmp_path_factory):
    """A run of the tiny recipe on `shapes_data`, pretrained and trained (read only)."""
    return trained_run(shapes_data, tmp_path_factory.mktemp("gan") / "run")


@pytest.fixture(scope="session")
def two_epoch_run(shapes_data, short_run, tmp_path_factory):
    """short_run's encoders trained two GAN epochs unbroken, the reference of the resume and move tests (read only)."""
    return trained_run(shapes_data, with_encoders(short_run, tmp_path_factory.mktemp("gan") / "two-epochs"),
                       "train.epochs=2")


def with_encoders(run, path: Path) -> Path:
    """A new run folder at `path` holding the encoders and vocabulary of `run`, for a GAN phase on them."""
    import shutil

    shutil.copytree(run.path / "encoders", path / "encoders")
    shutil.copyfile(run.path / "vocab.json", path / "vocab.json")
    return path


def checkpoint_differences(expected: dict, actual: dict) -> dict[str, float]:
    """The largest absolute difference of every float variable of two checkpoints of one run (same names)."""
    import numpy as np

    assert expected.keys() == actual.keys()
    return {name: float(np.abs(actual[name] - value).max()) for name, value in expected.items()
            if value.dtype.kind == "f"}


# -- a local HTTP server for the download paths -------------------------------------------------------------------

class FileHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; honours `Range: bytes=N-` when `honour_range` is set. Records the Range headers it saw."""

    honour_range = True
    ranges: list = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.ranges.append(self.headers.get("Range"))
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        if self.honour_range and self.headers.get("Range"):
            start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-"))
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])


@pytest.fixture
def server(tmp_path):
    """A local HTTP server over tmp_path/"served"; yields (base URL, handler class, folder)."""
    served = tmp_path / "served"
    served.mkdir()
    handler = type("Handler", (FileHandler,), {"ranges": [], "honour_range": True})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/files", handler, served
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture(scope="session")
def tiny_inception(tmp_path_factory):
    """A SavedModel with the TF-GAN Inception's contract at a tiny size: [-1, 1] images at 299 -> pool_3
    [B, 1, 1, 2048] and logits [B, 1008] (read only)."""
    import numpy as np
    import tensorflow as tf

    from t2ictl.evaluation.inception import INPUT_SIZE

    class TinyInception(tf.Module):
        def __init__(self):
            super().__init__()
            rng = np.random.default_rng(0)
            self.kernel = tf.Variable(rng.normal(size=(8, 8, 3, 16)).astype(np.float32) * 0.1)
            self.pool = tf.Variable(rng.normal(size=(16, 2048)).astype(np.float32))
            self.classes = tf.Variable(rng.normal(size=(2048, 1008)).astype(np.float32) * 0.02)

        @tf.function(input_signature=[tf.TensorSpec([None, INPUT_SIZE, INPUT_SIZE, 3], tf.float32)])
        def __call__(self, images):
            h = tf.nn.relu(tf.nn.conv2d(images, self.kernel, strides=8, padding="VALID"))
            pool = tf.nn.relu(tf.reduce_mean(h, axis=[1, 2]) @ self.pool)
            return {"pool_3": pool[:, None, None, :], "logits": pool @ self.classes}

    folder = tmp_path_factory.mktemp("inception") / "tiny"
    tf.saved_model.save(TinyInception(), str(folder))
    return folder


def restored_gan_phase(run_dir: Path):
    """The GAN phase of a run, built and restored from its latest training checkpoint (discriminators included)."""
    import tensorflow as tf

    from t2ictl import runs
    from t2ictl.training import gan, loop

    run = runs.RunDir(Path(run_dir))
    phase = gan.GANPhase(run.recipe(), run.vocab(), {"multi_label": False}, None, run, run.encoders)
    loop.build(phase)
    loop.phase_checkpoint(phase, phase.step).restore(
        tf.train.latest_checkpoint(str(run.checkpoints("train")))).assert_existing_objects_matched()
    return phase


def sentence_inputs(noise, sentence, max_words: int) -> dict:
    """A generator's inputs for a backbone that reads the sentence only (words zero, every word real)."""
    import numpy as np

    batch, text_dim = sentence.shape
    return {"noise": np.asarray(noise, np.float32), "sentence": np.asarray(sentence, np.float32),
            "words": np.zeros((batch, max_words, text_dim), np.float32),
            "mask": np.ones((batch, max_words), np.float32)}
