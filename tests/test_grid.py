"""The PNG sample grids a person opens: small images enlarged by whole pixels, each row under its caption in the
bitmap font (t2ictl/font.py), and `t2ictl sample` writing that grid."""

import numpy as np
import pytest
import tensorflow as tf
from typer.testing import CliRunner

from t2ictl import font, runs, sampling
from t2ictl.cli import app
from t2ictl.data.vocab import Vocabulary

A = [".###.",
     "#...#",
     "#...#",
     "#####",
     "#...#",
     "#...#",
     "#...#",
     "....."]
QUESTION_MARK = [".###.",
                 "#...#",
                 "....#",
                 "...#.",
                 "..#..",
                 ".....",
                 "..#..",
                 "....."]
SHORT = ["a red circle", "a small blue square"]
LONG = "this bird has a yellow belly, black wings and a long pointed beak; it perches on a thin branch at dawn"


def bitmap(picture: list[str]) -> np.ndarray:
    return np.array([[pixel == "#" for pixel in row] for row in picture])


def random_images(rows=2, cols=8, size=32, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (rows, cols, size, size, 3), dtype=np.uint8)


def test_a_known_glyph_gives_its_bitmap_and_scales_by_whole_pixels():
    np.testing.assert_array_equal(font.glyph("A"), bitmap(A))
    line = font.render("AA", scale=3)
    assert line.shape == (8 * 3, 2 * 6 * 3)
    np.testing.assert_array_equal(line[:, :15], np.kron(bitmap(A), np.ones((3, 3), bool)))
    assert not line[:, 15:18].any()  # the blank column between glyphs
    np.testing.assert_array_equal(line[:, 18:33], line[:, :15])


def test_characters_outside_the_font_draw_a_question_mark():
    np.testing.assert_array_equal(font.glyph("?"), bitmap(QUESTION_MARK))
    for char in ("é", "\x07", "\t", "中"):
        np.testing.assert_array_equal(font.glyph(char), bitmap(QUESTION_MARK))
    np.testing.assert_array_equal(font.render("café", 2), font.render("caf?", 2))


def test_every_printable_ascii_character_has_its_own_glyph():
    glyphs = {chr(code): font.glyph(chr(code)) for code in range(32, 127)}
    assert all(g.shape == (8, 5) for g in glyphs.values())
    assert len({g.tobytes() for g in glyphs.values()}) == len(glyphs)
    assert not glyphs[" "].any() and all(g.any() for c, g in glyphs.items() if c != " ")


def test_wrapping_keeps_lines_within_the_width_and_the_words_in_order():
    assert font.wrap("a large red circle on the left", 12, max_lines=3) == ["a large red", "circle on", "the left"]
    assert font.wrap("a large red circle", 12) == ["a large red", "circle"]
    assert font.wrap("a small square", 40) == ["a small square"]
    assert font.wrap("a   spaced\tcaption", 40) == ["a spaced caption"]
    assert font.wrap("abcdefghij", 4, max_lines=3) == ["abcd", "efgh", "ij"]  # a word longer than a line is cut


def test_a_caption_needing_more_than_two_lines_ends_with_an_ellipsis():
    lines = font.wrap(LONG, 30)
    assert len(lines) == 2 and all(len(line) <= 30 for line in lines)
    assert lines[0] == "this bird has a yellow belly,"
    assert lines[1].endswith(font.ELLIPSIS) and LONG.startswith(" ".join(lines)[:-1])
    assert font.wrap(LONG, 200) == [LONG]
    assert font.wrap("a large red circle on the left", 12) == ["a large red", "circle on" + font.ELLIPSIS]


def test_small_images_are_enlarged_to_at_least_96_pixels_by_a_whole_factor():
    assert [sampling.upscale_factor(size) for size in (8, 32, 40, 48, 64, 95, 96, 128, 256)] == [12, 3, 3, 2, 2, 2, 1,
                                                                                                 1, 1]


@pytest.mark.parametrize("captions, lines", [(None, 0), (SHORT, 1), ([SHORT[0], LONG], 2)])
def test_the_grid_shape_follows_from_tile_size_factor_pad_and_caption_band(captions, lines):
    picture = sampling.grid(random_images(2, 8, 32), captions, pad=2)
    band = sampling.caption_band_height(lines)
    assert band == {0: 0, 1: 2 * (4 + 10), 2: 2 * (4 + 20)}[lines]
    assert picture.shape == (2 * (band + 32 * 3 + 2) + 2, 8 * (32 * 3 + 2) + 2, 3) and picture.dtype == np.uint8


def test_the_plain_grid_keeps_the_raw_tiles():
    images = random_images(2, 3, 32)
    picture = sampling.grid(images, scale=1)
    assert picture.shape == (2 * 34 + 2, 3 * 34 + 2, 3)
    np.testing.assert_array_equal(picture[2:34, 36:68], images[0, 1])
    assert sampling.grid(random_images(1, 1, 128)).shape == (132, 132, 3)  # 128 px: no enlarging


@pytest.mark.parametrize("scale", [None, 2, 5])
def test_each_source_pixel_becomes_a_factor_by_factor_block(scale):
    images, pad = random_images(2, 3, 32), 2
    factor = scale or 3
    picture = sampling.grid(images, ["red", "blue"], pad=pad, scale=scale)  # one-line captions
    band, tile = sampling.caption_band_height(1), 32 * factor
    for r in range(2):
        for c in range(3):
            y, x = pad + r * (band + tile + pad) + band, pad + c * (tile + pad)
            blocks = picture[y:y + tile, x:x + tile].reshape(32, factor, 32, factor, 3)
            np.testing.assert_array_equal(blocks, np.broadcast_to(images[r, c][:, None, :, None], blocks.shape))
            assert (picture[y - 1, x:x + tile] == 255).all() and (picture[y + tile, x:x + tile] == 255).all()


def test_each_caption_is_drawn_in_the_band_above_its_row():
    pad, text_scale = 2, 2
    picture = sampling.grid(random_images(2, 8, 32), SHORT, pad=pad)
    band = sampling.caption_band_height(1)
    for r, caption in enumerate(SHORT):
        top = pad + r * (band + 96 + pad)
        area = picture[top:top + band]
        assert (area < 255).any()
        ink = font.render(caption, text_scale)
        y = band - 10 * text_scale  # one line, just above the images
        expected = np.where(ink, 0, 255)[:, :, None].repeat(3, axis=2)
        np.testing.assert_array_equal(area[y:y + ink.shape[0], pad:pad + ink.shape[1]], expected)
        area[y:y + ink.shape[0], pad:pad + ink.shape[1]] = 255
        assert (area == 255).all()  # nothing else in the band


def test_a_one_line_caption_in_a_two_line_band_sits_just_above_its_row():
    pad, band = 2, sampling.caption_band_height(2)
    picture = sampling.grid(random_images(2, 8, 32), [SHORT[0], LONG], pad=pad)
    ink = font.render(SHORT[0], 2)
    y = pad + band - 2 * 10  # the line's 10 font rows end where the images begin
    np.testing.assert_array_equal(picture[y:y + ink.shape[0], pad:pad + ink.shape[1], 0], np.where(ink, 0, 255))
    assert (picture[pad:y] == 255).all()


def test_long_captions_stay_inside_the_grid():
    pad = 2
    picture = sampling.grid(random_images(2, 2, 32), [LONG, "x" * 200], pad=pad)
    width = 2 * 98 + 2
    assert picture.shape[1] == width
    for r in range(2):
        top = pad + r * (sampling.caption_band_height(2) + 96 + pad)
        band = picture[top:top + sampling.caption_band_height(2)]
        assert (band < 255).any() and (band[:, width - pad:] == 255).all() and (band[:, :pad] == 255).all()
    lines = font.wrap(LONG, (width - 2 * pad) // (font.ADVANCE * 2))
    assert len(lines) == 2 and lines[1].endswith(font.ELLIPSIS)


def test_one_caption_per_row():
    with pytest.raises(ValueError, match="1 captions for a grid of 2 rows"):
        sampling.grid(random_images(2, 2, 32), SHORT[:1])


def test_write_grid_writes_the_grid_it_returns(tmp_path):
    images = random_images(2, 8, 32)
    picture = sampling.write_grid(tmp_path / "grid.png", images, SHORT)
    np.testing.assert_array_equal(picture, sampling.grid(images, SHORT))
    np.testing.assert_array_equal(tf.io.decode_png((tmp_path / "grid.png").read_bytes()).numpy(), picture)


class FakeSampler:
    """Random 32 px images in place of a trained model's sampler."""

    vocab, max_words = Vocabulary.build(SHORT), 12

    def __init__(self, *sampler_arguments):
        pass

    def sample(self, captions, per_caption, seed, truncation=0.0):
        return random_images(len(captions), per_caption, 32, seed)


@pytest.mark.parametrize("options, scale", [([], 3), (["--scale", "1"], 1), (["--scale", "4"], 4)])
def test_the_sample_command_writes_the_captioned_grid(options, scale, tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "open_sampler", lambda run, model: FakeSampler())
    out = tmp_path / "samples.png"
    result = CliRunner().invoke(app, ["sample", *SHORT, "--run", str(tmp_path), "-n", "3", "--out", str(out),
                                      *options])
    assert result.exit_code == 0, result.output
    picture = tf.io.decode_png(out.read_bytes()).numpy()
    np.testing.assert_array_equal(picture, sampling.grid(FakeSampler().sample(SHORT, 3, 0), SHORT, scale=scale))
    assert f"{picture.shape[1]} x {picture.shape[0]} px grid" in result.output


def test_the_training_report_writes_the_same_captioned_grid_to_samples_and_tensorboard(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from t2ictl.training import gan

    monkeypatch.setattr(gan, "held_out_captions", lambda data_dir, recipe, vocab, count: SHORT)
    phase = SimpleNamespace(data_dir=None, vocab=None, run=SimpleNamespace(path=tmp_path), sampler=FakeSampler,
                            recipe=SimpleNamespace(train=SimpleNamespace(sample_captions=2)))
    with tf.summary.create_file_writer(str(tmp_path / "logs")).as_default():
        gan.GANPhase.report(phase, 7)
    written = tf.io.decode_png((tmp_path / "samples" / "step-0000007.png").read_bytes()).numpy()
    np.testing.assert_array_equal(written, sampling.grid(FakeSampler().sample(SHORT, 4, 0), SHORT))
    events = next((tmp_path / "logs").glob("events.*"))
    logged = [value for event in tf.compat.v1.train.summary_iterator(str(events)) for value in event.summary.value]
    assert [value.tag for value in logged] == ["samples"]
    png = tf.make_ndarray(logged[0].tensor)[2]  # width, height, then the encoded image
    np.testing.assert_array_equal(tf.io.decode_png(png).numpy(), written)
