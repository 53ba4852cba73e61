"""Sample variation on the embedded shapes data: the spread measure and the real images it is compared with."""

import numpy as np
import pytest

from t2ictl.evaluation import consistency, variation


def test_spread_is_the_mean_per_pixel_standard_deviation():
    images = np.zeros((2, 4, 4, 3), np.uint8)
    images[1, :2] = 255  # half the pixels differ by 255 between the two images: std 127.5 there, 0 elsewhere
    assert variation.spread(images) == pytest.approx(127.5 / 2)
    assert variation.spread(np.repeat(images[:1], 8, axis=0)) == 0.0


@pytest.mark.parametrize("multi_object, caption", [
    (False, "a small red triangle on the left on a black background"),
    (False, "an image of one blue square in the middle"),
    (True, "a green circle and a yellow diamond on a grey background"),
])
def test_real_images_of_a_caption_show_what_it_names(multi_object, caption):
    images = variation.real_images_like(caption, multi_object, 64, 8, seed=3)
    reader = consistency.multi_agreement if multi_object else consistency.agreement
    figures = reader([caption] * 8, images)
    assert figures["both_accuracy" if not multi_object else "caption_accuracy"] == 1.0
    assert variation.spread(images) > 0  # jitter of position and size, and whatever the caption leaves free


def test_a_caption_that_names_less_leaves_more_freedom():
    named = variation.spread(variation.real_images_like(
        "a large red circle in the middle on a white background", False, 32, 8, seed=0))
    free = variation.spread(variation.real_images_like("a red circle", False, 32, 8, seed=0))
    assert free > 3 * named


class ReplaySampler:
    """Returns fixed images [captions, per_caption, H, W, 3], as a generator would."""

    def __init__(self, images):
        self.images = images

    def sample(self, captions, per_caption, seed):
        return self.images


def test_sample_variation_compares_with_real_images_of_each_caption():
    captions = ["a large red circle in the middle on a white background", "a blue diamond on the right"]
    real = np.stack([variation.real_images_like(c, False, 32, 8, seed=i) for i, c in enumerate(captions)])
    same = variation.sample_variation(ReplaySampler(real), captions, False, 32)
    assert same["variation_ratio"] == pytest.approx(1.0) and same["jitter_variation_ratio"] == pytest.approx(1.0)
    collapsed = variation.sample_variation(ReplaySampler(np.repeat(real[:, :1], 8, axis=1)), captions, False, 32)
    assert collapsed["variation"] == 0.0 and collapsed["variation_ratio"] == 0.0
    assert same["real_variation"] == collapsed["real_variation"] > 0


class RealImagesSampler:
    """Draws, for each caption, real images that fit it: a generator as good as the data."""

    def __init__(self, multi_object: bool):
        self.multi_object = multi_object

    def sample(self, captions, per_caption, seed):
        return np.stack([variation.real_images_like(c, self.multi_object, 32, per_caption, seed=seed + i)
                         for i, c in enumerate(captions)])


@pytest.mark.parametrize("name", ["shapes", "shapes-multi"])
def test_held_out_figures_of_both_embedded_variants(name, tmp_path):
    from conftest import prepare_shapes, tiny_recipe

    from t2ictl.data.vocab import Vocabulary

    data = prepare_shapes(tmp_path / name, 40, multi_object=name == "shapes-multi")
    recipe = tiny_recipe(data, name=name)
    vocab = Vocabulary.load(data / "vocab.json")
    sampler = RealImagesSampler(name == "shapes-multi")
    figures = consistency.shapes_consistency(sampler, data, recipe, vocab, count=8)
    figures |= variation.shapes_variation(sampler, data, recipe, vocab, count=8)
    accuracy = "both_accuracy" if name == "shapes" else "object_accuracy"
    assert figures[accuracy] >= 0.75 and figures[f"real_{accuracy}"] >= 0.75  # the reader at 32 px: 0.9 of objects
    assert figures["variation_ratio"] == pytest.approx(1.0, abs=0.3)
