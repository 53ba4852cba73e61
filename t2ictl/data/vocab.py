"""Tokenizer and vocabulary, identical in Python and inside a TensorFlow graph (for the input pipeline and export).

Tokens are maximal runs of ASCII letters and digits after ASCII lower-casing, the rule of AttnGAN's
`RegexpTokenizer(r'\\w+')` restricted to ASCII so that Python and TensorFlow (RE2) agree byte for byte.
Index 0 is `<pad>`, index 1 is `<unk>`; the other words follow by descending count, ties alphabetical.
"""

from __future__ import annotations

import collections
import json
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from t2ictl import fileio
from t2ictl.errors import UserError

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1
TOKEN_PATTERN = "[a-z0-9]+"
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_TOKEN_RE = re.compile(TOKEN_PATTERN)


def tokenize(text: str) -> list[str]:
    return _TOKEN_RE.findall(text.translate(_ASCII_LOWER))


@dataclass(frozen=True)
class Vocabulary:
    words: tuple[str, ...]  # index -> word, words[0] == PAD, words[1] == UNK
    counts: dict[str, int]
    min_count: int

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1) -> "Vocabulary":
        counts = collections.Counter(token for caption in captions for token in tokenize(caption))
        kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls(words=(PAD, UNK, *kept), counts={w: counts[w] for w in kept}, min_count=min_count)

    def __len__(self) -> int:
        return len(self.words)

    @property
    def index(self) -> dict[str, int]:
        return {word: i for i, word in enumerate(self.words)}

    def encode(self, text: str) -> list[int]:
        index = self.index
        return [index.get(token, UNK_ID) for token in tokenize(text)]

    def unknown_words(self, text: str) -> list[str]:
        index = self.index
        return [token for token in tokenize(text) if token not in index]

    def to_json(self) -> dict:
        return {"words": list(self.words), "counts": self.counts, "min_count": self.min_count,
                "token_pattern": TOKEN_PATTERN}

    def save(self, path: Path) -> None:
        fileio.write_json(path, self.to_json())

    @classmethod
    def load(cls, path: Path) -> "Vocabulary":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            words = tuple(data["words"])
            counts = {str(k): int(v) for k, v in data["counts"].items()}
            min_count = int(data["min_count"])
        except FileNotFoundError:
            raise UserError(f"vocabulary {path} does not exist; run `t2ictl prepare` first") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError(f"vocabulary {path} is not a t2ictl vocabulary: {exc}") from None
        if words[:2] != (PAD, UNK) or data.get("token_pattern", TOKEN_PATTERN) != TOKEN_PATTERN:
            raise UserError(f"vocabulary {path} does not start with {PAD}, {UNK} or uses another tokenizer")
        return cls(words=words, counts=counts, min_count=min_count)


class GraphTokenizer:
    """Captions (tf.string) to fixed-length token ids inside a TensorFlow graph, matching `Vocabulary.encode`."""

    def __init__(self, vocab: Vocabulary, max_words: int):
        import tensorflow as tf

        self.max_words = max_words
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(vocab.words[2:], tf.string), tf.range(2, len(vocab), dtype=tf.int64)
            ),
            default_value=UNK_ID,
        )

    def words(self, captions):
        """Ragged [batch, None] tf.string tokens of a [batch] tf.string tensor, as `tokenize`."""
        import tensorflow as tf

        lowered = tf.strings.lower(captions)  # ASCII-only lowering, as tokenize()
        return tf.strings.split(tf.strings.regex_replace(lowered, "[^a-z0-9]+", " "))

    def lookup(self, words):
        """Token ids (int32) of a ragged or dense tf.string tensor of words."""
        import tensorflow as tf

        if isinstance(words, tf.RaggedTensor):
            return tf.cast(tf.ragged.map_flat_values(self.table.lookup, words), tf.int32)
        return tf.cast(self.table.lookup(words), tf.int32)

    def ids(self, captions):
        """(token ids [batch, max_words] int32 padded with PAD_ID, lengths [batch] int32), first max_words words."""
        import tensorflow as tf

        ids = self.lookup(self.words(captions))[:, : self.max_words]
        lengths = tf.cast(ids.row_lengths(), tf.int32)
        dense = ids.to_tensor(default_value=PAD_ID, shape=[None, self.max_words])
        return dense, lengths
