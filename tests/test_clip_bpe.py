"""CLIP's BPE in the graph gives the ids OpenAI's clip/simple_tokenizer.py gives (tests/fixtures/clip_bpe_tiny.json:
a merges list of our own, ids written by the official tokenizer): merges by rank, left to right without overlap,
bytes of any script, the start and end ids, truncation to the context with the end id kept last, HTML entities."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from t2ictl.data import clip_bpe
from t2ictl.data.vocab import GraphTokenizer, Vocabulary
from t2ictl.errors import UserError
from t2ictl.sampling import tokenize_captions

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "clip_bpe_tiny.json").read_text())


@pytest.fixture(scope="module")
def vocab(tmp_path_factory) -> Vocabulary:
    path = tmp_path_factory.mktemp("bpe") / "bpe_simple_vocab_16e6.txt.gz"
    path.write_bytes(gzip.compress(("#version: test\n" + "\n".join(FIXTURE["merges"])).encode()))
    return Vocabulary.clip(clip_bpe.read_merges(path))


def test_the_graph_gives_the_official_ids(vocab):
    assert len(vocab) == 256 * 2 + len(FIXTURE["merges"]) + 2
    tokenizer = GraphTokenizer(vocab, 77)
    traced = tf.function(tokenizer.ids, input_signature=[tf.TensorSpec([None], tf.string)])
    ids, lengths = traced(tf.constant(FIXTURE["captions"]))
    for row, expected in enumerate(FIXTURE["ids"]):
        assert ids[row, :lengths[row]].numpy().tolist() == expected, FIXTURE["captions"][row]
        assert not ids[row, lengths[row]:].numpy().any()
    assert max(len(e) for e in FIXTURE["ids"]) == 77  # one caption is cut, its end id kept


def test_python_sampling_asks_the_graph_and_the_vocabulary_round_trips(vocab, tmp_path):
    vocab.save(tmp_path / "vocab.json")
    loaded = Vocabulary.load(tmp_path / "vocab.json")
    assert loaded == vocab
    captions = FIXTURE["captions"][:5]
    tokens, unknown = tokenize_captions(captions, loaded, 77)
    for row, expected in enumerate(FIXTURE["ids"][:5]):
        np.testing.assert_array_equal(tokens[row, :len(expected)], expected)
    assert unknown == [[]] * 5  # BPE spells any text


def test_bad_merges_files_are_one_error(tmp_path):
    with pytest.raises(UserError, match="no such CLIP BPE file"):
        clip_bpe.read_merges(tmp_path / "missing.txt.gz")
    (tmp_path / "bad.txt").write_text("#version\na b c\n")
    with pytest.raises(UserError, match="not a CLIP BPE merges file"):
        clip_bpe.read_merges(tmp_path / "bad.txt")
    (tmp_path / "broken.gz").write_bytes(b"\x1f\x8b" + b"\x00" * 20)
    with pytest.raises(UserError, match="broken.gz: not a CLIP BPE merges file"):
        clip_bpe.read_merges(tmp_path / "broken.gz")
