import numpy as np
import pytest
import tensorflow as tf

from t2ictl.data.vocab import PAD_ID, UNK_ID, GraphTokenizer, Vocabulary, tokenize
from t2ictl.errors import UserError

CAPTIONS = [
    "A small Red bird, with a black-ish beak!",
    "this bird has wings that are brown and has a yellow belly",
    "  multiple   spaces\tand\nnewlines  ",
    "Ünïcödé letters: café crème and the 2nd bird's tail",
    "",
    "!!!",
]


def test_tokenize_is_ascii_words_lowercased():
    assert tokenize("A small Red bird, with a black-ish beak!") == [
        "a", "small", "red", "bird", "with", "a", "black", "ish", "beak"]
    assert tokenize("café") == ["caf"]  # non-ASCII letters separate tokens, in Python and in the graph alike
    assert tokenize("!!!") == []


def test_vocabulary_order_and_min_count():
    vocab = Vocabulary.build(["b a a", "c a b"], min_count=2)
    assert vocab.words == ("<pad>", "<unk>", "a", "b")
    assert vocab.encode("a c b z") == [2, UNK_ID, 3, UNK_ID]
    assert vocab.unknown_words("a c b z") == ["c", "z"]


def test_save_load_round_trip_and_errors(tmp_path):
    vocab = Vocabulary.build(CAPTIONS)
    vocab.save(tmp_path / "vocab.json")
    assert Vocabulary.load(tmp_path / "vocab.json") == vocab
    with pytest.raises(UserError, match="does not exist"):
        Vocabulary.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"words": ["x"]}')
    with pytest.raises(UserError, match="not a t2ictl vocabulary"):
        Vocabulary.load(tmp_path / "bad.json")


def test_graph_tokenizer_matches_python():
    vocab = Vocabulary.build(CAPTIONS[:2])
    max_words = 6
    tokenizer = GraphTokenizer(vocab, max_words)
    ids, lengths = tokenizer.ids(tf.constant(CAPTIONS))
    for row, caption in enumerate(CAPTIONS):
        expected = vocab.encode(caption)[:max_words]
        assert lengths[row] == len(expected)
        np.testing.assert_array_equal(ids[row].numpy(), expected + [PAD_ID] * (max_words - len(expected)))
    words = tokenizer.words(tf.constant(CAPTIONS))
    for row, caption in enumerate(CAPTIONS):
        assert [w.decode() for w in words[row].numpy()] == tokenize(caption)


DAMSM_WORDS = {0: "<end>", 1: "bird", 2: "red", 3: "caf", 4: "red_bird", 5: "s", 6: "wings", 7: "ncd"}
UNICODE_CAPTIONS = [
    "A Red_bird, café Ünïcödé 日本 bird's WINGS",
    "Ærø straße İstanbul ﬁnch naïve 2nd",
    "Привет bird — wings… red\ufffd\ufffdbird",
    "red\u00a0bird\u2003wings\tred",
]


def test_damsm_tokenize_keeps_unicode_words_and_drops_their_non_ascii_letters():
    assert tokenize("A Red_bird, café Ünïcödé 日本 bird's", "damsm") == [
        "a", "red_bird", "caf", "ncd", "bird", "s"]
    assert tokenize("red\ufffd\ufffdbird", "damsm") == ["red", "bird"]  # U+FFFD is no word character
    assert tokenize("日本 —", "damsm") == []


def test_damsm_vocabulary_keeps_official_ids_and_drops_unknown_words(tmp_path):
    vocab = Vocabulary.damsm(DAMSM_WORDS)
    assert vocab.encode("A red bird, a zebra's wings") == [2, 1, 5, 6]
    assert vocab.unknown_words("A red bird, a zebra's wings") == ["a", "a", "zebra"]
    vocab.save(tmp_path / "vocab.json")
    assert Vocabulary.load(tmp_path / "vocab.json") == vocab
    with pytest.raises(UserError, match="0 = <end>"):
        Vocabulary.damsm({0: "bird", 1: "red"})
    with pytest.raises(UserError, match="0 = <end>"):
        Vocabulary.damsm({0: "<end>", 2: "red"})


@pytest.mark.parametrize("kind", ["ascii", "damsm"])
def test_graph_tokenizer_matches_python_on_unicode(kind):
    vocab = Vocabulary.damsm(DAMSM_WORDS) if kind == "damsm" else Vocabulary.build(CAPTIONS[:2] + ["red wings"])
    captions = CAPTIONS + UNICODE_CAPTIONS
    tokenizer = GraphTokenizer(vocab, max_words=5)
    ids, lengths = tokenizer.ids(tf.constant(captions))
    words = tokenizer.words(tf.constant(captions))
    for row, caption in enumerate(captions):
        assert [w.decode() for w in words[row].numpy()] == tokenize(caption, kind), caption
        expected = vocab.encode(caption)[:5]
        assert lengths[row] == len(expected)
        np.testing.assert_array_equal(ids[row].numpy(), expected + [PAD_ID] * (5 - len(expected)))


def test_sampling_refuses_a_caption_of_only_dropped_words():
    from t2ictl.sampling import tokenize_captions

    vocab = Vocabulary.damsm(DAMSM_WORDS)
    tokens, unknown = tokenize_captions(["a red zebra bird"], vocab, 4)
    np.testing.assert_array_equal(tokens, [[2, 1, 0, 0]])
    assert unknown == [["a", "zebra"]]
    with pytest.raises(UserError, match="only words the model does not know"):
        tokenize_captions(["a zebra"], vocab, 4)
