"""The Inception-v3 network that FID and the Inception Score read images with.

Five sources, one contract (uint8 images [B, H, W, 3] in, float32 pool features and class logits out), in two
FID modes that the literature mixes up (the same images differ by up to 10 FID points between them):
- "TF FID": a TF-Hub handle or URL (default: the TF-GAN evaluation Inception that TF-GAN's FID uses), or a local hub /
  SavedModel folder, called with float32 images in [-1, 1] at 299x299 and returning `pool_3` and `logits`;
- "PyTorch FID": pytorch-fid's FID Inception weights (`pt_inception-2015-12-05-6726825d.pth`, the network DF-GAN,
  GALIP and most PyTorch papers report with), run by `models/torch_inception.py` as pytorch-fid runs them;
- the embedded data's evaluation classifier (a folder DATA/evaluator/, see shapes_network.py): its 128-d features and
  its class logits, an FID of its own that compares only runs on the same embedded data;
- a Keras InceptionV3 weights file (`.h5` / `.weights.h5`, as `keras.applications.InceptionV3` saves it with its top):
  the 2048-d `avg_pool` features and the `predictions` layer's logits (before its softmax), neither FID of the papers.
Every image but the classifier's is resized to 299x299 with bilinear interpolation, half-pixel centres and no
antialiasing (what `tf.image.resize` does, and what pytorch-fid's F.interpolate(mode='bilinear', align_corners=False)
does), then scaled to [-1, 1], which is both networks' preprocessing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from t2ictl import fileio
from t2ictl.errors import UserError
from t2ictl.evaluation import shapes_network

DEFAULT_HANDLE = "https://tfhub.dev/tensorflow/tfgan/eval/inception/1"
INPUT_SIZE = 299
POOL_DIM = 2048
PYTORCH_FID_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   "pt_inception-2015-12-05-6726825d.pth")


def preprocess(images) -> tf.Tensor:
    """uint8 [B, H, W, 3] -> float32 [B, 299, 299, 3] in [-1, 1]."""
    images = tf.cast(images, tf.float32)
    images = tf.image.resize(images, [INPUT_SIZE, INPUT_SIZE], method="bilinear", antialias=False)
    return images / 127.5 - 1.0


class InceptionNetwork:
    """Callable: uint8 images -> (pool features [B, 2048], logits [B, classes]), both float32."""

    def __init__(self, forward, identity: str, mode: str = "TF FID", weights_sha256: str | None = None,
                 model=None, pool_dim: int = POOL_DIM, prepare=preprocess, exclusive_classes: bool = True,
                 resize: str = "bilinear to 299, half-pixel centres, no antialias (as pytorch-fid), then [-1, 1]"):
        self.identity = identity  # names the network in the statistics cache key
        self.model = model  # the Keras model inside, where there is one
        self.mode = mode  # "TF FID", "PyTorch FID", "Keras InceptionV3" or "shapes classifier": which FIDs compare
        self.weights_sha256 = weights_sha256  # of the weights file, where one was given
        self.pool_dim = pool_dim
        self.resize = resize  # the preprocessing, for the protocol
        self.exclusive_classes = exclusive_classes  # one class per image, so that the Inception Score applies
        self._plain = lambda images: forward(prepare(images))
        self._compiled = tf.function(self._plain, reduce_retracing=True)

    def __call__(self, images) -> tuple[np.ndarray, np.ndarray]:
        pool, logits = self._compiled(tf.convert_to_tensor(images, tf.uint8))
        return pool.numpy(), logits.numpy()

    def eager(self, images) -> tuple[np.ndarray, np.ndarray]:
        """The same computation op by op, without tf.function (the benchmark's comparison)."""
        pool, logits = self._plain(tf.convert_to_tensor(images, tf.uint8))
        return pool.numpy(), logits.numpy()


def load_network(spec: str | None = None) -> InceptionNetwork:
    """The network named by --inception: a Keras weights file, a hub/SavedModel folder, or a TF-Hub handle/URL."""
    spec = spec or DEFAULT_HANDLE
    if spec.endswith(".h5"):
        return _keras_network(Path(spec))
    if spec.endswith(".pth"):
        return _pytorch_fid_network(Path(spec))
    if "://" not in spec:
        folder = Path(spec)
        if not folder.is_dir():
            raise UserError(f"--inception {spec}: no such folder or .h5 file")
        if shapes_network.is_evaluator(folder):
            return _shapes_network(folder)
        digest = _digest(folder / "saved_model.pb")
        return _hub_network(str(folder), f"saved_model:{digest[:16]}", digest)
    return _hub_network(spec, spec)


def _hub_network(handle: str, identity: str, weights_sha256: str | None = None) -> InceptionNetwork:
    import tensorflow_hub as hub

    try:
        module = hub.load(handle)
    except Exception as exc:  # offline, HTTP errors, a folder that is not a SavedModel: all "cannot load"
        reason = (str(exc) or type(exc).__name__).splitlines()[0][:200]
        raise UserError(f"cannot load the Inception network {handle} ({reason}); download it (for TF-Hub: "
                        f"{DEFAULT_HANDLE}?tf-hub-format=compressed, unpacked into a folder) and pass "
                        "--inception FOLDER, or pass a Keras InceptionV3 weights file --inception FILE.h5") from None

    def forward(images):
        outputs = module(images) if callable(module) else module.signatures["default"](images)
        if "pool_3" not in outputs or "logits" not in outputs:
            raise UserError(f"the Inception network {handle} returns {sorted(outputs)}, not pool_3 and logits")
        pool = tf.reshape(tf.cast(outputs["pool_3"], tf.float32), [tf.shape(images)[0], -1])
        return pool, tf.cast(outputs["logits"], tf.float32)

    return InceptionNetwork(forward, identity, "TF FID", weights_sha256)


def _pytorch_fid_network(path: Path) -> InceptionNetwork:
    """pytorch-fid's FID Inception: its 2048-d pool features and its 1008-class logits."""
    from t2ictl.models.torch_inception import build_torch_inception, torch_inception_weights
    from t2ictl.torch_files import StateDict, read_checkpoint

    if not path.is_file():
        raise UserError(f"--inception {path}: no such file (pytorch-fid's weights: {PYTORCH_FID_URL})")
    state = StateDict(read_checkpoint(path), path, "the FID Inception")
    model = build_torch_inception("fid", name="fid_inception_v3")
    torch_inception_weights(model, state)
    classes = state.arrays.get("fc.weight", np.zeros((0, POOL_DIM))).shape[0]
    kernel = state("fc.weight", (classes, POOL_DIM)).T
    bias = state("fc.bias", (classes,))

    def forward(images):
        pool = tf.reduce_mean(model(images, training=False)["mixed_7c"], axis=[1, 2])
        return pool, tf.matmul(pool, kernel) + bias

    digest = fileio.sha256_file(path)
    return InceptionNetwork(forward, f"pytorch-fid:{digest[:16]}", "PyTorch FID", digest, model)


def _keras_network(path: Path) -> InceptionNetwork:
    import keras

    if not path.is_file():
        raise UserError(f"--inception {path}: no such file")
    model = keras.applications.InceptionV3(weights=None, include_top=True)
    try:
        model.load_weights(str(path))
    except Exception as exc:
        raise UserError(f"--inception {path}: not Keras InceptionV3 weights with the top "
                        f"({(str(exc) or type(exc).__name__).splitlines()[0][:200]})") from None
    digest = _digest(path)
    return keras_model_network(model, f"keras:{digest[:16]}", digest)


def keras_model_network(model, identity: str, weights_sha256: str | None = None) -> InceptionNetwork:
    """A built keras.applications.InceptionV3 (with its top) as an InceptionNetwork."""
    import keras

    trunk = keras.Model(model.input, model.get_layer("avg_pool").output)
    kernel, bias = model.get_layer("predictions").get_weights()

    def forward(images):
        pool = tf.cast(trunk(images, training=False), tf.float32)
        return pool, tf.matmul(pool, kernel) + bias

    return InceptionNetwork(forward, identity, "Keras InceptionV3", weights_sha256)


def _shapes_network(folder: Path) -> InceptionNetwork:
    """The embedded data's evaluation classifier (evaluation/shapes_network.py), at its own input size."""
    forward, info = shapes_network.load(folder)
    return InceptionNetwork(forward, f"shapes-classifier:{info['sha256'][:16]}", "shapes classifier",
                            info["sha256"], pool_dim=shapes_network.FEATURES,
                            prepare=lambda images: tf.cast(images, tf.float32) / 127.5 - 1.0,
                            exclusive_classes=not info["multi_label"],
                            resize=f"bilinear with antialias to {shapes_network.IMAGE_SIZE} (the classifier's size), "
                                   "then [-1, 1]")


def _digest(path: Path) -> str:
    if not path.is_file():
        raise UserError(f"--inception: {path} missing; the folder is not a SavedModel")
    return fileio.sha256_file(path)
