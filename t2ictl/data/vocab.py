"""Tokenizers and vocabularies, identical in Python and inside a TensorFlow graph (for the input pipeline and export).

Three tokenizers:
- "ascii" (t2ictl's own vocabularies): tokens are maximal runs of ASCII letters and digits after ASCII lower-casing,
  so that Python and TensorFlow (RE2) agree byte for byte. Index 0 is `<pad>`, index 1 is `<unk>`; the other words
  follow by descending count, ties alphabetical.
- "damsm" (the vocabulary of the released DAMSM encoders, read from their captions pickle): lower case, maximal runs
  of Unicode word characters (`\\w+`), each token stripped of its non-ASCII characters, empty tokens dropped. Index 0
  is `<end>`, which pads; words not in the vocabulary are dropped, as AttnGAN's and DF-GAN's loaders drop them. The
  graph uses RE2's Unicode tables: they agree with Python's `\\w` on every code point below U+3000 (and lag it only on
  scripts added to Unicode lately).
- "clip" (CLIP's text tower, for GALIP's released models): byte-level BPE over the merges of CLIP's vocabulary file
  (data/clip_bpe.py); a caption becomes <|startoftext|>, its ids, <|endoftext|>, padded with 0. It knows every text,
  and runs in the graph only (Python asks the graph).
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
DAMSM_END = "<end>"
TOKEN_PATTERN = "[a-z0-9]+"
DAMSM_PATTERN = r"\w+"
CLIP_SPECIAL = ("<|startoftext|>", "<|endoftext|>")
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_TOKEN_RE = re.compile(TOKEN_PATTERN)
_DAMSM_RE = re.compile(DAMSM_PATTERN)


def tokenize(text: str, tokenizer: str = "ascii") -> list[str]:
    if tokenizer == "clip":
        return text.split()  # whitespace-separated: what a CLIP caption holds before BPE (for the "no words" check)
    if tokenizer == "damsm":
        tokens = (token.encode("ascii", "ignore").decode("ascii") for token in _DAMSM_RE.findall(text.lower()))
        return [token for token in tokens if token]
    return _TOKEN_RE.findall(text.translate(_ASCII_LOWER))


@dataclass(frozen=True)
class Vocabulary:
    words: tuple[str, ...]  # index -> word; "ascii": words[0] == PAD, words[1] == UNK; "damsm": words[0] == <end>
    counts: dict[str, int]
    min_count: int
    tokenizer: str = "ascii"
    merges: tuple[str, ...] = ()  # "clip": the BPE merges ("a b"), lowest rank first

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1) -> "Vocabulary":
        counts = collections.Counter(token for caption in captions for token in tokenize(caption))
        kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls(words=(PAD, UNK, *kept), counts={w: counts[w] for w in kept}, min_count=min_count)

    @classmethod
    def damsm(cls, ixtoword: dict[int, str]) -> "Vocabulary":
        """The vocabulary of a DAMSM captions pickle, its word ids kept."""
        if sorted(ixtoword) != list(range(len(ixtoword))) or ixtoword.get(0) != DAMSM_END:
            raise UserError(f"a DAMSM vocabulary maps ids 0..n-1 to words with 0 = {DAMSM_END}")
        return cls(words=tuple(ixtoword[i] for i in range(len(ixtoword))), counts={}, min_count=0,
                   tokenizer="damsm")

    @classmethod
    def clip(cls, merges: list[str]) -> "Vocabulary":
        """CLIP's vocabulary from the merges of its BPE file (clip_bpe.read_merges)."""
        from t2ictl.data import clip_bpe

        return cls(words=clip_bpe.vocabulary_words(merges), counts={}, min_count=0, tokenizer="clip",
                   merges=tuple(merges))

    def __len__(self) -> int:
        return len(self.words)

    @property
    def drops_unknown(self) -> bool:
        return self.tokenizer == "damsm"

    @property
    def index(self) -> dict[str, int]:
        return {word: i for i, word in enumerate(self.words)}

    def encode(self, text: str) -> list[int]:
        if self.tokenizer == "clip":
            raise ValueError("a CLIP vocabulary encodes in the graph: GraphTokenizer(vocab, 77).ids(captions)")
        index = self.index
        ids = (index.get(token, UNK_ID) for token in tokenize(text, self.tokenizer)
               if token in index or not self.drops_unknown)
        return list(ids)

    def unknown_words(self, text: str) -> list[str]:
        if self.tokenizer == "clip":
            return []  # byte-level BPE spells any text
        index = self.index
        return [token for token in tokenize(text, self.tokenizer) if token not in index]

    def to_json(self) -> dict:
        pattern = {"damsm": DAMSM_PATTERN, "ascii": TOKEN_PATTERN}.get(self.tokenizer, "")
        data = {"words": list(self.words), "counts": self.counts, "min_count": self.min_count,
                "tokenizer": self.tokenizer, "token_pattern": pattern}
        return data | ({"merges": list(self.merges)} if self.tokenizer == "clip" else {})

    def save(self, path: Path) -> None:
        fileio.write_json(path, self.to_json())

    @classmethod
    def load(cls, path: Path) -> "Vocabulary":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            words = tuple(data["words"])
            counts = {str(k): int(v) for k, v in data["counts"].items()}
            min_count = int(data["min_count"])
            tokenizer = data.get("tokenizer", "ascii")
            merges = tuple(data.get("merges", ()))
        except FileNotFoundError:
            raise UserError(f"vocabulary {path} does not exist; run `t2ictl prepare` first") from None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UserError(f"vocabulary {path} is not a t2ictl vocabulary: {exc}") from None
        first = {"ascii": (PAD, UNK), "damsm": (DAMSM_END,), "clip": ()}.get(tokenizer)
        if first is None or words[:len(first)] != first or (tokenizer == "clip" and words[-2:] != CLIP_SPECIAL):
            raise UserError(f"vocabulary {path} uses an unknown tokenizer or does not start with its special words")
        return cls(words=words, counts=counts, min_count=min_count, tokenizer=tokenizer, merges=merges)


class GraphTokenizer:
    """Captions (tf.string) to fixed-length token ids inside a TensorFlow graph, matching `Vocabulary.encode`."""

    def __init__(self, vocab: Vocabulary, max_words: int):
        import tensorflow as tf

        self.max_words, self.tokenizer, self.drops_unknown = max_words, vocab.tokenizer, vocab.drops_unknown
        if vocab.tokenizer == "clip":
            from t2ictl.data.clip_bpe import ClipBpe

            self.bpe = ClipBpe(vocab.words, vocab.merges, max_words)
            self.tables = [self.bpe.bytes, self.bpe.ranks, self.bpe.ids_of]
            return
        # the special words cannot be tokens (no tokenizer keeps "<"), so every word can go into the table
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(vocab.words, tf.string),
                                                tf.range(len(vocab), dtype=tf.int64)),
            default_value=-1 if vocab.drops_unknown else UNK_ID,
        )
        self.tables = [self.table]  # what a tf.Module that tokenizes must track

    def words(self, captions):
        """Ragged [batch, None] tf.string tokens of a [batch] tf.string tensor, as `tokenize`."""
        import tensorflow as tf

        if self.tokenizer == "damsm":
            lowered = tf.strings.lower(captions, encoding="utf-8")
            separated = tf.strings.regex_replace(lowered, r"[^\pL\pN_]+", " ")
            return tf.strings.split(tf.strings.regex_replace(separated, r"[^\x00-\x7f]", ""))
        lowered = tf.strings.lower(captions)  # ASCII-only lowering, as tokenize()
        return tf.strings.split(tf.strings.regex_replace(lowered, "[^a-z0-9]+", " "))

    def lookup(self, words):
        """Token ids (int32) of a ragged or dense tf.string tensor of words (-1 for words a "damsm" vocabulary
        drops)."""
        import tensorflow as tf

        if isinstance(words, tf.RaggedTensor):
            return tf.cast(tf.ragged.map_flat_values(self.table.lookup, words), tf.int32)
        return tf.cast(self.table.lookup(words), tf.int32)

    def ids(self, captions):
        """(token ids [batch, max_words] int32 padded with PAD_ID, lengths [batch] int32), first max_words words."""
        import tensorflow as tf

        if self.tokenizer == "clip":
            return self.bpe.ids(captions)
        ids = self.lookup(self.words(captions))
        if self.drops_unknown:
            ids = tf.ragged.boolean_mask(ids, ids >= 0)
        ids = ids[:, : self.max_words]
        lengths = tf.cast(ids.row_lengths(), tf.int32)
        dense = ids.to_tensor(default_value=PAD_ID, shape=[None, self.max_words])
        return dense, lengths
