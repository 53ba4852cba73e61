"""`t2ictl import damsm`: released DAMSM files (written here in torch's formats with the official parameter names and
shapes) become a run's encoders and vocabulary; each mapping convention is checked against NumPy, and a GAN trains on
the imported encoders with the official word ids."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_recipe
from torch_format import Tensor, write_legacy, write_python2_pickle, write_zip
from typer.testing import CliRunner

from t2ictl.cli import app
from t2ictl.data.vocab import GraphTokenizer, Vocabulary
from t2ictl.errors import UserError
from t2ictl.interop import damsm

FIXTURES = Path(__file__).parent / "fixtures"
EMBEDDING, HIDDEN, TEXT_DIM = 12, 8, 16


def torchvision_inception_shapes() -> dict[str, tuple[int, ...]]:
    """The names and shapes of torchvision's Inception-v3 state dict (fc and AuxLogits left out)."""
    lines = (FIXTURES / "torchvision_inception_v3.txt").read_text().splitlines()
    return {name: tuple(map(int, shape)) for name, *shape in (line.split() for line in lines if line[:1] != "#")}


def random_state(shapes: dict, rng) -> collections.OrderedDict:
    state = collections.OrderedDict()
    for name, shape in shapes.items():
        if name.endswith("num_batches_tracked"):
            state[name] = np.array(100, np.int64)
        elif name.endswith("running_var") or name.endswith("bn.weight"):
            state[name] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        elif len(shape) == 4:  # He-scaled convolutions keep the activations near unit scale through 94 layers
            state[name] = (rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))).astype(np.float32)
        else:
            state[name] = rng.uniform(-0.2, 0.2, shape).astype(np.float32)
    return state


def text_encoder_state(vocab_size: int, rng) -> collections.OrderedDict:
    shapes = {"encoder.weight": (vocab_size, EMBEDDING)}
    for suffix in ("", "_reverse"):
        shapes |= {f"rnn.weight_ih_l0{suffix}": (4 * HIDDEN, EMBEDDING),
                   f"rnn.weight_hh_l0{suffix}": (4 * HIDDEN, HIDDEN),
                   f"rnn.bias_ih_l0{suffix}": (4 * HIDDEN,), f"rnn.bias_hh_l0{suffix}": (4 * HIDDEN,)}
    return collections.OrderedDict((k, rng.uniform(-0.5, 0.5, s).astype(np.float32)) for k, s in shapes.items())


def official_words(shapes_vocab: Vocabulary) -> list[str]:
    """A vocabulary with the shapes data's words in another order than t2ictl's (ids differ), as a pickle has."""
    return ["<end>", *sorted(shapes_vocab.words[2:], reverse=True)]


def image_encoder_state(rng, text_dim: int = TEXT_DIM) -> collections.OrderedDict:
    """A random CNN_ENCODER: torchvision's Inception-v3 and the two projections to text_dim."""
    return random_state(torchvision_inception_shapes() | {"emb_features.weight": (text_dim, 768, 1, 1),
                                                          "emb_cnn_code.weight": (text_dim, 2048),
                                                          "emb_cnn_code.bias": (text_dim,)}, rng)


def write_text_side(folder: Path, data_dir: Path, rng, captions_name: str = "captions.pickle"):
    """A captions pickle over the data's words (Python 2 strings) and an RNN_ENCODER for it (legacy format):
    (the words by official id, the encoder's state)."""
    words = official_words(Vocabulary.load(data_dir / "vocab.json"))
    ixtoword = dict(enumerate(words))
    write_python2_pickle(folder / captions_name, [[[1, 2, 3]], [[2, 1]], ixtoword,
                                                  {w: i for i, w in ixtoword.items()}])
    text = text_encoder_state(len(words), rng)
    write_legacy(folder / "text_encoder200.pth", {k: Tensor(v) for k, v in text.items()})
    return words, text


@pytest.fixture(scope="module")
def damsm_files(tmp_path_factory, shapes_data):
    folder = tmp_path_factory.mktemp("damsm")
    rng = np.random.default_rng(0)
    words, text = write_text_side(folder, shapes_data, rng)
    image = image_encoder_state(rng)
    write_zip(folder / "image_encoder200.pth", {f"module.{k}": Tensor(v) for k, v in image.items()})  # DataParallel
    return {"folder": folder, "words": words, "text": text, "image": image}


def import_args(files, run_dir, *extra):
    folder = files["folder"]
    return ["import", "damsm", "--text-encoder", str(folder / "text_encoder200.pth"), "--captions",
            str(folder / "captions.pickle"), "--run-dir", str(run_dir), "--recipe", "shapes", *extra]


@pytest.fixture(scope="module")
def imported(damsm_files, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "damsm"
    result = CliRunner().invoke(app, import_args(damsm_files, run_dir, "--image-encoder",
                                                 str(damsm_files["folder"] / "image_encoder200.pth")))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return run_dir


def numpy_lstm(inputs: np.ndarray, w_ih, w_hh, b_ih, b_hh) -> np.ndarray:
    """torch.nn.LSTM over [T, E]: gates i, f, g, o from W_ih x + b_ih + W_hh h + b_hh; the hidden state of each step."""
    h, c, out = np.zeros(HIDDEN), np.zeros(HIDDEN), []
    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    for x in inputs:
        i, f, g, o = np.split(w_ih @ x + b_ih + w_hh @ h + b_hh, 4)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        out.append(h)
    return np.array(out)


def numpy_rnn_encoder(state, ids: list[int], max_words: int) -> tuple[np.ndarray, np.ndarray]:
    """RNN_ENCODER on one caption as a packed sequence: (words [max_words, 2H], zero after the caption; sentence)."""
    embedded = state["encoder.weight"][ids]
    forward = numpy_lstm(embedded, *(state[f"rnn.{k}_l0"] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")))
    backward = numpy_lstm(embedded[::-1], *(state[f"rnn.{k}_l0_reverse"]
                                            for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")))[::-1]
    words = np.zeros((max_words, 2 * HIDDEN))
    words[:len(ids)] = np.concatenate([forward, backward], axis=1)
    return words, np.concatenate([forward[-1], backward[0]])


def test_the_run_holds_the_official_vocabulary_and_records_its_sources(imported, damsm_files):
    from t2ictl import runs

    vocab = runs.RunDir(imported).vocab()
    assert vocab.tokenizer == "damsm" and list(vocab.words) == damsm_files["words"]
    info = json.loads((imported / "encoders" / "encoders.json").read_text())
    assert info["image_trunk"] == "inception_v3_torchvision" and info["text_dim"] == TEXT_DIM
    assert info["word_scale"] == info["sentence_scale"] == 1.0 and info["contrastive"] is False  # no calibration
    assert len(info["source"]["text_encoder"]["sha256"]) == 64


def test_the_text_encoder_is_rnn_encoder_with_official_ids(imported, damsm_files):
    from t2ictl import runs

    encoders, _ = runs.load_encoders(imported / "encoders")
    index = {w: i for i, w in enumerate(damsm_files["words"])}
    captions = ["A RED circle, on the zebra-blue background!", "small square", "circle"]
    expected_ids = [[index[w] for w in c.lower().replace(",", " ").replace("!", " ").replace("-", " ").split()
                     if w in index] for c in captions]
    max_words = encoders.text.input_shape[1]
    tokens, lengths = GraphTokenizer(encoders.vocab, max_words).ids(tf.constant(captions))
    assert [list(row[:n]) for row, n in zip(tokens.numpy(), lengths.numpy())] == expected_ids
    out = encoders.text(tokens, training=False)
    for row, ids in enumerate(expected_ids):
        words, sentence = numpy_rnn_encoder(damsm_files["text"], ids, max_words)
        np.testing.assert_allclose(out["words"][row].numpy(), words, atol=1e-5)
        np.testing.assert_allclose(out["sentence"][row].numpy(), sentence, atol=1e-5)


def test_the_image_encoder_maps_convolutions_batch_norms_and_projections(imported, damsm_files):
    from t2ictl import runs

    image = runs.load_encoders(imported / "encoders")[0].image
    state = damsm_files["image"]
    trunk = image.get_layer("torch_inception_v3")
    x = np.random.default_rng(1).uniform(-1, 1, (2, 299, 299, 3)).astype(np.float32)
    first = keras_output(trunk, "Conv2d_1a_3x3.relu", x)
    np.testing.assert_allclose(first[:, :4, :4], numpy_basic_conv(x[:, :9, :9], state, "Conv2d_1a_3x3", 2),
                               rtol=1e-4, atol=1e-4)
    maps = trunk(x, training=False)
    images = tf.image.resize(x, image.input_shape[1:3], method="bilinear").numpy()  # the encoder resizes back to 299
    out = image(images, training=False)
    trunk_maps = trunk(tf.image.resize(images, (299, 299), method="bilinear"), training=False)
    regions = trunk_maps["mixed_6e"].numpy().reshape(2, -1, 768) @ state["emb_features.weight"][:, :, 0, 0].T
    pooled = trunk_maps["mixed_7c"].numpy().mean(axis=(1, 2))
    np.testing.assert_allclose(out["regions"].numpy(), regions, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out["global"].numpy(), pooled @ state["emb_cnn_code.weight"].T
                               + state["emb_cnn_code.bias"], rtol=1e-4, atol=1e-4)
    assert maps["mixed_6e"].shape == (2, 17, 17, 768) and maps["mixed_7c"].shape == (2, 8, 8, 2048)


def keras_output(model, layer: str, x):
    import keras

    return keras.Model(model.input, model.get_layer(layer).output)(x, training=False).numpy()


def numpy_basic_conv(x: np.ndarray, state, name: str, stride: int) -> np.ndarray:
    """torchvision's BasicConv2d (valid convolution, batch norm eps 1e-3, ReLU) with torch's [out, in, kh, kw]."""
    kernel = state[f"{name}.conv.weight"]
    size = kernel.shape[2]
    rows = (x.shape[1] - size) // stride + 1
    out = np.zeros((x.shape[0], rows, rows, kernel.shape[0]))
    for i in range(rows):
        for j in range(rows):
            patch = x[:, i * stride:i * stride + size, j * stride:j * stride + size]  # [B, kh, kw, in]
            out[:, i, j] = np.einsum("bhwc,ochw->bo", patch, kernel)
    bn = {k: state[f"{name}.bn.{k}"] for k in ("weight", "bias", "running_mean", "running_var")}
    normed = (out - bn["running_mean"]) / np.sqrt(bn["running_var"] + 1e-3) * bn["weight"] + bn["bias"]
    return np.maximum(normed, 0)


def test_the_two_pools_of_the_two_inceptions():
    """torchvision averages over 9 pixels with the zero border counted; pytorch-fid over the pixels inside."""
    import keras

    from t2ictl.models.torch_inception import pool_3x3

    x = np.random.default_rng(2).uniform(0, 1, (1, 4, 4, 1)).astype(np.float32)
    padded = np.pad(x[0, :, :, 0], 1)
    ones = np.pad(np.ones((4, 4)), 1)
    windows = lambda a: np.array([[a[i:i + 3, j:j + 3] for j in range(4)] for i in range(4)])  # noqa: E731
    expected = {"avg": windows(padded).sum(axis=(2, 3)) / 9,
                "avg_exclude_border": windows(padded).sum(axis=(2, 3)) / windows(ones).sum(axis=(2, 3)),
                "max": windows(np.pad(x[0, :, :, 0], 1, constant_values=-np.inf)).max(axis=(2, 3))}
    for kind, want in expected.items():
        inputs = keras.Input((4, 4, 1))
        got = keras.Model(inputs, pool_3x3(inputs, "p", kind))(x).numpy()[0, :, :, 0]
        np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=kind)


def test_a_gan_trains_on_the_imported_encoders_with_their_word_ids(imported, shapes_data, tmp_path):
    from t2ictl import runs
    from t2ictl.data import pipeline
    from t2ictl.training import gan

    recipe = tiny_recipe(shapes_data, f'train.encoders="{imported}"', "contrastive.enabled=false",
                         "train.epochs=1")
    run = runs.open_run(tmp_path / "gan", recipe, shapes_data, "train", resume=False)
    assert run.vocab() == runs.RunDir(imported).vocab()  # the encoders' vocabulary, not the data's
    batch = next(iter(pipeline.eval_dataset(shapes_data, recipe.data, run.vocab(), caption="first")))
    caption = batch["caption"][0].numpy().decode()
    expected = run.vocab().encode(caption)
    np.testing.assert_array_equal(batch["tokens"][0].numpy()[:len(expected)], expected)
    manifest = json.loads((shapes_data / "manifest.json").read_text())
    gan.train(recipe, shapes_data, manifest, run)
    assert run.has_checkpoint("train")


def test_supcon_pretraining_starts_from_the_imported_encoders(imported, tmp_path):
    from conftest import prepare_shapes

    from t2ictl import runs

    data = prepare_shapes(tmp_path / "data", 16)
    run_dir = tmp_path / "phase1"
    result = CliRunner().invoke(app, ["pretrain", "--recipe", "shapes", "--data", str(data), "--run-dir",
                                      str(run_dir), "--set", f'pretrain.init="{imported}"', "--set",
                                      "pretrain.epochs=1", "--set", "pretrain.learning_rate=1e-9", "--set",
                                      "data.batch_size=4", "--set", "runtime.precision=float32"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    recipe = runs.RunDir(run_dir).recipe()
    assert (recipe.pretrain.image_trunk, recipe.pretrain.text_dim, recipe.contrastive.enabled) == (
        damsm.IMAGE_TRUNK, TEXT_DIM, True)  # the imported encoders' sizes and trunk, the framework's loss on
    assert runs.RunDir(run_dir).vocab() == runs.RunDir(imported).vocab()  # the official word ids
    start, _ = runs.load_encoders(imported / "encoders")
    end, info = runs.load_encoders(run_dir / "encoders")
    assert info["sentence_scale"] == info["word_scale"] == 1.0  # the released scale, which their generators expect
    for before, after in ((start.text, end.text), (start.image, end.image)):  # a 1e-9 step leaves them in place
        for a, b in zip(before.get_weights(), after.get_weights(), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5)


def test_a_text_only_import_serves_dfgan_but_not_the_contrastive_loss(damsm_files, shapes_data, tmp_path):
    from t2ictl import runs
    from t2ictl.training import gan

    result = CliRunner().invoke(app, import_args(damsm_files, tmp_path / "text-only"))
    assert result.exit_code == 0, repr(result.exception)
    encoders, info = runs.load_encoders(tmp_path / "text-only" / "encoders")
    assert encoders.image is None and info["image_encoder"] is False
    recipe = tiny_recipe(shapes_data, f'train.encoders="{tmp_path / "text-only"}"')
    run = runs.open_run(tmp_path / "gan", recipe, shapes_data, "train", resume=False)
    manifest = json.loads((shapes_data / "manifest.json").read_text())
    with pytest.raises(UserError, match="the contrastive loss read images with the DAMSM image encoder"):
        gan.train(recipe, shapes_data, manifest, run)


def test_bad_files_get_one_error_naming_the_file_and_the_parameter(damsm_files, tmp_path):
    folder = damsm_files["folder"]
    state = dict(damsm_files["text"])
    state["rnn.weight_hh_l0"] = state["rnn.weight_hh_l0"][:, :4]
    write_zip(tmp_path / "narrow.pth", {k: Tensor(v) for k, v in state.items()})
    with pytest.raises(UserError, match=r"narrow.pth: parameter rnn.weight_hh_l0 has shape \[32, 4\], the model "
                                        r"needs \[32, 8\]"):
        damsm.load_text_encoder(damsm.text_encoder_state(tmp_path / "narrow.pth"),
                                damsm.read_captions(folder / "captions.pickle").vocab, 18)
    data = (folder / "text_encoder200.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="cut.pth: truncated"):
        damsm.text_encoder_state(tmp_path / "cut.pth")
    write_python2_pickle(tmp_path / "other.pickle", [[], [], {0: "<end>"}, {"<end>": 0}, "extra"])
    with pytest.raises(UserError, match="not a DAMSM captions pickle"):
        damsm.read_captions(tmp_path / "other.pickle")
    write_python2_pickle(tmp_path / "small.pickle", [[], [], {0: "<end>", 1: "red"}, {"<end>": 0, "red": 1}])
    with pytest.raises(UserError, match=r"embeds \d+ words, the captions pickle has 2"):
        damsm.load_text_encoder(damsm.text_encoder_state(folder / "text_encoder200.pth"),
                                damsm.read_captions(tmp_path / "small.pickle").vocab, 18)
