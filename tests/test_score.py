"""t2ictl score: FID, IS and R-precision against independent NumPy/SciPy computations; the Inception network from a
folder, a local HTTP server and a Keras weights file; the real-statistics cache; the command end to end."""

import json
import tarfile

import numpy as np
import pytest
import tensorflow as tf
from typer.testing import CliRunner

from t2ictl.cli import app
from t2ictl.errors import UserError
from t2ictl.evaluation import fid, stats_cache
from t2ictl.evaluation import score as scoring
from t2ictl.evaluation.inception import load_network, preprocess
from t2ictl.evaluation.inception_score import inception_score
from t2ictl.evaluation.r_precision import r_precision


def eigen_frechet(mu1, s1, mu2, s2):
    """tr sqrt(S1 S2) = sum of sqrt of the eigenvalues of sqrt(S1) S2 sqrt(S1), a symmetric PSD matrix."""
    values, vectors = np.linalg.eigh(s1)
    root = vectors @ np.diag(np.sqrt(np.clip(values, 0, None))) @ vectors.T
    middle = np.linalg.eigvalsh(root @ s2 @ root)
    diff = mu1 - mu2
    return diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(np.clip(middle, 0, None)))


def random_features(rng, n, d, scale=1.0):
    mixing = rng.normal(size=(d, d)) * scale
    return rng.normal(size=(n, d)) @ mixing + rng.normal(size=d)


def test_frechet_distance_matches_an_eigendecomposition_formula():
    rng = np.random.default_rng(0)
    a, b = random_features(rng, 500, 24), random_features(rng, 400, 24, scale=0.7)
    (mu1, s1), (mu2, s2) = fid.statistics(a), fid.statistics(b)
    np.testing.assert_allclose(s1, np.cov(a, rowvar=False), rtol=1e-10, atol=1e-10)
    assert fid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(eigen_frechet(mu1, s1, mu2, s2), rel=1e-6)


def test_near_singular_covariances():
    """Fewer images than feature dimensions: both covariances are singular (rank 11 in 64 dims)."""
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(12, 64)), rng.normal(size=(12, 64)) + 0.5
    (mu1, s1), (mu2, s2) = fid.statistics(a), fid.statistics(b)
    assert np.linalg.matrix_rank(s1) == 11
    value = fid.frechet_distance(mu1, s1, mu2, s2)
    assert np.isfinite(value)
    assert value == pytest.approx(eigen_frechet(mu1, s1, mu2, s2), rel=1e-4)


def test_the_offset_fallback_is_used_when_sqrtm_is_not_finite(monkeypatch):
    rng = np.random.default_rng(2)
    (mu1, s1), (mu2, s2) = fid.statistics(rng.normal(size=(200, 8))), fid.statistics(rng.normal(size=(200, 8)))
    real_sqrtm, calls = fid.linalg.sqrtm, []

    def first_call_not_finite(matrix):
        calls.append(matrix)
        return np.full_like(matrix, np.inf) if len(calls) == 1 else real_sqrtm(matrix)

    monkeypatch.setattr(fid.linalg, "sqrtm", first_call_not_finite)
    value = fid.frechet_distance(mu1, s1, mu2, s2)
    offset = np.eye(8) * fid.SQRTM_EPS
    np.testing.assert_allclose(calls[1], (s1 + offset) @ (s2 + offset))
    assert value == pytest.approx(eigen_frechet(mu1, s1 + offset, mu2, s2 + offset) - 2 * 8 * fid.SQRTM_EPS,
                                  rel=1e-6)


def test_a_large_imaginary_component_is_refused(monkeypatch):
    monkeypatch.setattr(fid.linalg, "sqrtm", lambda m: np.eye(len(m)) * (1 + 0.5j))
    with pytest.raises(ValueError, match="imaginary"):
        fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(3))


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_a_shift():
    rng = np.random.default_rng(3)
    x = random_features(rng, 1000, 32)
    mu, sigma = fid.statistics(x)
    assert abs(fid.frechet_distance(mu, sigma, mu, sigma)) < 1e-6
    shifts = [0.1, 0.5, 1.0, 2.0]
    values = [fid.frechet_distance(mu, sigma, *fid.statistics(x + s)) for s in shifts]
    np.testing.assert_allclose(values, [32 * s * s for s in shifts], rtol=1e-5)  # ||shift||^2, same covariance


def test_batched_statistics_equal_numpy():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(301, 10)) * 3 + 100  # a large mean: the accumulation must stay exact in float64
    accumulator = fid.FeatureStatistics(10)
    for part in np.array_split(x, 7):
        accumulator.add(part.astype(np.float32))
    mu, sigma = accumulator.result()
    np.testing.assert_allclose(mu, x.astype(np.float32).mean(0), rtol=1e-6)
    np.testing.assert_allclose(sigma, np.cov(x.astype(np.float32).astype(np.float64), rowvar=False), rtol=1e-6,
                               atol=1e-6)


def reference_inception_score(logits, splits):
    scores = []
    for part in np.array_split(logits, splits):
        p = np.exp(part - part.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        marginal = p.mean(0)
        kl = [sum(pi[j] * (np.log(pi[j]) - np.log(marginal[j])) for j in range(len(pi)) if pi[j] > 0) for pi in p]
        scores.append(np.exp(np.mean(kl)))
    return np.mean(scores), np.std(scores)


def test_inception_score_matches_a_direct_computation():
    logits = np.random.default_rng(5).normal(size=(200, 12)) * 3
    mean, std = inception_score(logits, splits=10)
    expected = reference_inception_score(logits, 10)
    assert (mean, std) == pytest.approx(expected, rel=1e-9)


def test_inception_score_bounds():
    assert inception_score(np.zeros((100, 7)))[0] == pytest.approx(1.0)  # one uniform guess for every image
    confident = np.eye(10)[np.arange(100) % 10] * 50.0  # each split holds every class once, confidently
    assert inception_score(confident)[0] == pytest.approx(10.0, rel=1e-6)


def test_r_precision_against_a_loop():
    rng = np.random.default_rng(6)
    sentences = rng.normal(size=(300, 16))
    images = sentences[:120] + rng.normal(size=(120, 16)) * 1.5
    mean, std = r_precision(images, sentences[:120], sentences, seed=9)
    others = np.random.default_rng(9).integers(0, 300, size=(120, 99))
    cos = lambda u, v: u @ v / np.linalg.norm(u) / np.linalg.norm(v)  # noqa: E731
    hits = []
    for i in range(120):
        true = cos(images[i], sentences[i])
        hits.append(all(cos(images[i], sentences[j]) < true for j in others[i] if j != i))
    folds = [f.mean() for f in np.array_split(np.array(hits), 10)]
    assert (mean, std) == pytest.approx((np.mean(folds), np.std(folds)))
    assert 0.05 < mean < 0.95
    assert r_precision(sentences[:50], sentences[:50], sentences)[0] == 1.0


# -- the Inception network --------------------------------------------------------------------------------------------


def test_preprocess_resizes_bilinearly_to_299_in_unit_range():
    image = np.random.default_rng(7).integers(0, 256, size=(1, 32, 32, 3)).astype(np.uint8)
    out = preprocess(image).numpy()
    assert out.shape == (1, 299, 299, 3) and out.min() >= -1 and out.max() <= 1
    # half-pixel centres: output pixel (i + 0.5) * 32 / 299 - 0.5 in input coordinates
    y = (10 + 0.5) * 32 / 299 - 0.5
    y0, frac = int(np.floor(y)), y - np.floor(y)
    x = (0 + 0.5) * 32 / 299 - 0.5  # < 0: clamped to the first column
    assert x < 0
    expected = (1 - frac) * image[0, y0, 0] + frac * image[0, y0 + 1, 0]
    np.testing.assert_allclose(out[0, 10, 0], expected / 127.5 - 1, atol=1e-5)


def test_a_saved_model_folder_loads_and_gives_2048_features(tiny_inception):
    network = load_network(str(tiny_inception))
    pool, logits = network(np.zeros((3, 64, 64, 3), np.uint8))
    assert pool.shape == (3, 2048) and logits.shape == (3, 1008)
    assert network.identity.startswith("saved_model:")


def test_a_hub_handle_is_fetched_over_http(tiny_inception, server, tmp_path, monkeypatch):
    base, _, served = server
    (served / "files").mkdir()
    with tarfile.open(served / "files" / "tiny.tar.gz", "w:gz") as archive:
        for path in tiny_inception.rglob("*"):
            archive.add(path, arcname=str(path.relative_to(tiny_inception)), recursive=False)
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "hub-cache"))
    network = load_network(f"{base}/tiny.tar.gz")
    pool, _ = network(np.full((2, 32, 32, 3), 200, np.uint8))
    expected, _ = load_network(str(tiny_inception))(np.full((2, 32, 32, 3), 200, np.uint8))
    np.testing.assert_allclose(pool, expected, rtol=1e-6)
    assert network.identity == f"{base}/tiny.tar.gz"


def test_an_unreachable_handle_names_the_flag(server, tmp_path, monkeypatch):
    base, _, _ = server  # serves an empty folder: 404
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "hub-cache"))
    with pytest.raises(UserError, match="--inception"):
        load_network(f"{base}/missing.tar.gz")
    with pytest.raises(UserError, match="no such folder"):
        load_network(str(tmp_path / "nowhere"))


def test_keras_inception_weights_give_pool_features_and_logits(tmp_path):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.applications.InceptionV3(weights=None, include_top=True)
    path = tmp_path / "inception.weights.h5"
    model.save_weights(path)
    network = load_network(str(path))
    images = np.random.default_rng(8).integers(0, 256, size=(2, 40, 40, 3)).astype(np.uint8)
    pool, logits = network(images)
    assert pool.shape == (2, 2048) and logits.shape == (2, 1000)
    probabilities = model(preprocess(images), training=False).numpy()
    np.testing.assert_allclose(tf.nn.softmax(logits).numpy(), probabilities, rtol=1e-3, atol=1e-6)
    (tmp_path / "broken.h5").write_bytes(b"not hdf5")
    with pytest.raises(UserError, match="broken.h5"):
        load_network(str(tmp_path / "broken.h5"))


# -- the real-statistics cache ----------------------------------------------------------------------------------------


def test_a_cache_hit_skips_the_real_images_and_a_stale_key_does_not_hit(tiny_inception, tmp_path):
    network = load_network(str(tiny_inception))
    made = []

    def side():
        made.append(1)
        images = np.random.default_rng(len(made)).integers(0, 256, size=(20, 32, 32, 3)).astype(np.uint8)
        return scoring.GeneratedSide(iter([(images[:10], None), (images[10:], None)]), 20)

    key = {"data": "abc", "split": "test", "size": 32}
    mu, sigma, hit = scoring.real_statistics(network, side, key, tmp_path)
    assert not hit and made == [1]
    mu2, sigma2, hit = scoring.real_statistics(network, side, key, tmp_path)
    assert hit and made == [1]
    np.testing.assert_array_equal(mu, mu2)
    _, _, hit = scoring.real_statistics(network, side, {**key, "size": 64}, tmp_path)
    assert not hit and len(made) == 2
    other = load_network(str(tiny_inception))
    other.identity = "another-network"
    _, _, hit = scoring.real_statistics(other, side, key, tmp_path)
    assert not hit and len(made) == 3
    path = next(iter(tmp_path.glob("*.npz")))
    path.write_bytes(b"damaged")  # recomputed, not an error
    assert stats_cache.load(tmp_path, {**key, "network": "whatever"}) is None


# -- the command ------------------------------------------------------------------------------------------------------


def write_images(folder, images):
    folder.mkdir(parents=True)
    for i, image in enumerate(images):
        (folder / f"{i:04d}.png").write_bytes(tf.io.encode_png(image).numpy())


def test_score_two_folders(tiny_inception, tmp_path):
    rng = np.random.default_rng(9)
    real = rng.integers(0, 256, size=(30, 32, 32, 3)).astype(np.uint8)
    write_images(tmp_path / "a", real)
    write_images(tmp_path / "b", real)
    write_images(tmp_path / "c", np.clip(real.astype(int) + 60, 0, 255).astype(np.uint8))
    runner = CliRunner()
    common = ["--inception", str(tiny_inception), "--cache-dir", str(tmp_path / "cache"), "--batch", "8"]
    same = runner.invoke(app, ["score", "--images", str(tmp_path / "a"), "--reference", str(tmp_path / "b"),
                               "--json", str(tmp_path / "same.json"), *common])
    assert same.exit_code == 0, same.output
    other = runner.invoke(app, ["score", "--images", str(tmp_path / "c"), "--reference", str(tmp_path / "b"),
                                "--json", str(tmp_path / "other.json"), *common])
    assert other.exit_code == 0, other.output
    assert "cached statistics" in other.output
    fid_of = lambda name: json.loads((tmp_path / name).read_text())["results"][0]  # noqa: E731
    assert fid_of("same.json")["metric"] == "FID" and abs(fid_of("same.json")["value"]) < 1e-3
    assert fid_of("other.json")["value"] > 1.0
    bad = runner.invoke(app, ["score", "--images", str(tmp_path / "a"), *common])
    assert isinstance(bad.exception, UserError) and "--reference" in str(bad.exception)


def test_score_a_trained_run(short_run, shapes_data, tiny_inception, tmp_path):
    args = ["score", "--run", str(short_run.path), "--data", str(shapes_data), "--num", "100",
            "--inception", str(tiny_inception), "--cache-dir", str(tmp_path), "--json", str(tmp_path / "scores.json")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = {r["metric"]: r for r in json.loads((tmp_path / "scores.json").read_text())["results"]}
    consistency = {"shape_accuracy", "colour_accuracy", "both_accuracy"}
    assert set(rows) == {"FID", "IS", "R-precision"} | consistency
    assert all(r["n"] == 100 for name, r in rows.items() if name not in consistency)
    fid_value, is_value, r_value = recomputed_scores(short_run, shapes_data, tiny_inception, num=100, batch=50)
    assert rows["FID"]["value"] == pytest.approx(fid_value, rel=1e-4)
    assert rows["IS"]["value"] == pytest.approx(is_value, rel=1e-6)
    assert rows["R-precision"]["value"] == pytest.approx(r_value, abs=1e-9)
    # caption consistency: the first caption of each of the 64 test images, drawn with seed 0, read back by pixels
    from t2ictl import runs
    from t2ictl.evaluation.consistency import agreement, held_out

    sampler, recipe, _ = runs.open_generator(runs.RunDir(short_run.path))
    captions, _ = held_out(shapes_data, recipe, sampler.vocab, 100)
    expected = agreement(captions, sampler.sample(captions, per_caption=1, seed=0)[:, 0])
    for name in consistency:
        assert rows[name]["n"] == len(captions) == 64 and rows[name]["value"] == expected[name]


def recomputed_scores(run, data, inception, num: int, batch: int) -> tuple[float, float, float]:
    """The three scores of `t2ictl score --seed 0` from the parts, with the NumPy formulas of this file: the split's
    captions in seeded permutations, noise seed = first index of the batch, FID by eigendecomposition, IS directly,
    R-precision by a loop over 99 drawn captions that skips copies of the true caption."""
    from t2ictl import runs
    from t2ictl.data import pipeline
    from t2ictl.data.vocab import GraphTokenizer
    from t2ictl.models.text_encoder import encode_captions

    captions = pipeline.split_captions(data, "test")
    rng = np.random.default_rng(0)
    plan = np.concatenate([rng.permutation(len(captions)) for _ in range(-(-num // len(captions)))])[:num]
    sampler, _, backbone = runs.open_generator(runs.RunDir(run.path))
    images = np.concatenate([sampler.sample([captions[i] for i in plan[start:start + batch]], per_caption=1,
                                            seed=start)[:, 0] for start in range(0, num, batch)])
    network = load_network(str(inception))
    pool, logits = network(images)
    real = np.concatenate([network(x)[0] for x in pipeline.split_images(data, "test", 32, batch).as_numpy_iterator()])
    fid_value = eigen_frechet(pool.mean(0), np.cov(pool, rowvar=False), real.mean(0), np.cov(real, rowvar=False))

    size = backbone.encoders.image.input_shape[1]
    scaled = tf.image.resize(tf.cast(images, tf.float32), [size, size]) / 127.5 - 1.0
    image_features = backbone.encoders.image(scaled, training=False)["global"].numpy()
    tokenizer = GraphTokenizer(sampler.vocab, sampler.max_words)
    sentences = np.concatenate([out["sentence"].numpy()
                                for _, out in encode_captions(backbone.encoders.text, tokenizer, captions)])
    others = np.random.default_rng(0).integers(0, len(captions), size=(num, 99))
    cos = lambda u, v: u @ v / np.linalg.norm(u) / np.linalg.norm(v)  # noqa: E731
    hits = []
    for i, caption in enumerate(plan):
        true = cos(image_features[i], sentences[caption])
        hits.append(all(cos(image_features[i], sentences[j]) < true for j in others[i]
                        if captions[j] != captions[caption]))
    r_value = np.mean([fold.mean() for fold in np.array_split(np.array(hits), 10)])
    return fid_value, reference_inception_score(logits, 10)[0], r_value


# -- the literature's FID network, statistics files and the protocol ---------------------------------------------------


def test_pytorch_fid_weights_give_its_pool_features_and_logits(tmp_path):
    """pytorch-fid's FID Inception (torchvision's names and shapes, fc of 1008 classes): average pools without the
    border in Mixed_5b..7b, a max pool in Mixed_7c; pool = spatial mean of Mixed_7c, logits = fc(pool)."""
    from test_import_damsm import random_state, torchvision_inception_shapes
    from torch_format import Tensor, write_zip

    from t2ictl import fileio

    rng = np.random.default_rng(11)
    state = random_state(torchvision_inception_shapes() | {"fc.weight": (1008, 2048), "fc.bias": (1008,)}, rng)
    path = write_zip(tmp_path / "pt_inception-2015-12-05-6726825d.pth", {k: Tensor(v) for k, v in state.items()})
    network = load_network(str(path))
    assert network.mode == "PyTorch FID" and network.weights_sha256 == fileio.sha256_file(path)
    model = network.model
    names = {layer.name for layer in model.layers}
    assert {"Mixed_7c.max_pool", "Mixed_7b.avg_pool", "Mixed_5b.avg_pool"} <= names
    assert not any(name.endswith(".pad") for name in names)  # no zero border enters a mean
    images = rng.integers(0, 256, size=(2, 64, 64, 3)).astype(np.uint8)
    pool, logits = network(images)
    maps = model(preprocess(images), training=False)["mixed_7c"].numpy()
    np.testing.assert_allclose(pool, maps.mean(axis=(1, 2)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logits, pool @ state["fc.weight"].T + state["fc.bias"], rtol=1e-4, atol=1e-4)


def test_saved_statistics_score_as_the_folder_they_came_from(tiny_inception, tmp_path):
    rng = np.random.default_rng(12)
    write_images(tmp_path / "real", rng.integers(0, 256, size=(30, 32, 32, 3)).astype(np.uint8))
    write_images(tmp_path / "fake", rng.integers(0, 200, size=(30, 32, 32, 3)).astype(np.uint8))
    runner = CliRunner()
    common = ["--inception", str(tiny_inception), "--no-cache", "--batch", "8"]
    # FID is symmetric: real scored against the fake folder (saving real's statistics) = fake against those
    by_folder = runner.invoke(app, ["score", "--images", str(tmp_path / "real"), "--reference", str(tmp_path / "fake"),
                                    "--save-stats", str(tmp_path / "real.npz"), "--json", str(tmp_path / "a.json"),
                                    *common])
    assert by_folder.exit_code == 0, repr(by_folder.exception)
    with np.load(tmp_path / "real.npz") as stored:
        assert sorted(stored.files) == ["mu", "sigma"] and stored["sigma"].shape == (2048, 2048)
    by_stats = runner.invoke(app, ["score", "--images", str(tmp_path / "fake"), "--reference-stats",
                                   str(tmp_path / "real.npz"), "--json", str(tmp_path / "b.json"), *common])
    assert by_stats.exit_code == 0, repr(by_stats.exception)
    by_folder, by_stats = (json.loads((tmp_path / name).read_text()) for name in ("a.json", "b.json"))
    assert by_stats["results"][0]["value"] == pytest.approx(by_folder["results"][0]["value"], rel=1e-6)
    protocol = by_stats["protocol"]
    assert protocol["fid_mode"] == "TF FID" and protocol["n"] == 30 and protocol["seed"] == 0
    assert protocol["real"]["kind"] == "statistics file" and len(protocol["real"]["sha256"]) == 64
    assert by_folder["protocol"]["real"]["kind"] == "image folder"
    assert protocol["network_sha256"] == by_folder["protocol"]["network_sha256"] is not None
    np.savez(tmp_path / "bad.npz", mu=np.zeros(64), sigma=np.eye(64))
    bad = runner.invoke(app, ["score", "--images", str(tmp_path / "fake"), "--reference-stats",
                              str(tmp_path / "bad.npz"), *common])
    assert isinstance(bad.exception, UserError) and "not the statistics of 2048-d" in str(bad.exception)
