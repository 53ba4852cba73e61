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
