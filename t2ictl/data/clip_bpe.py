"""CLIP's byte-level BPE tokenizer inside a TensorFlow graph (the rules of OpenAI's clip/simple_tokenizer.py).

- Text: HTML entities unescaped (the common ones), whitespace runs collapsed, stripped, lower-cased (Unicode).
- Pieces: "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", runs of letters, single digits, runs of anything else but
  whitespace, found left to right.
- Each piece's UTF-8 bytes become printable characters (one per byte, a fixed table); the last gets "</w>".
- Merges: repeatedly the adjacent pair with the lowest rank in the merges file is joined wherever it occurs (left to
  right, not overlapping), until no adjacent pair has a rank.
- The vocabulary: the 256 byte characters, the same with "</w>", one entry per merge, then <|startoftext|> and
  <|endoftext|>. A caption is [start] + ids + [end], cut to the context (the last kept id then being [end], as
  clip.tokenize(truncate=True)) and padded with 0.
Left out: ftfy's repair of mis-decoded text and Unicode normalisation, which change nothing in clean captions.
"""

from __future__ import annotations

import gzip
from pathlib import Path

from t2ictl.errors import UserError

START, END = "<|startoftext|>", "<|endoftext|>"
MERGES = 49152 - 256 - 2  # CLIP's vocabulary of 49408 holds this many merges
PIECES = r"('s|'t|'re|'ve|'m|'ll|'d|\pL+|\pN|[^\s\pL\pN]+)"
ENTITIES = (("&quot;", '"'), ("&#39;", "'"), ("&lt;", "<"), ("&gt;", ">"), ("&amp;", "&"))
UNRANKED = 2**31 - 1


PRINTABLE = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]


def byte_table() -> dict[int, str]:
    """The character each byte stands for, in vocabulary order: the printable Latin-1 bytes stand for themselves;
    then the other bytes, in byte order, for the code points from 256 up."""
    others = [byte for byte in range(256) if byte not in PRINTABLE]
    return {**{byte: chr(byte) for byte in PRINTABLE}, **{byte: chr(256 + k) for k, byte in enumerate(others)}}


def byte_characters() -> list[str]:
    """byte_table() indexed by byte value."""
    table = byte_table()
    return [table[byte] for byte in range(256)]


def read_merges(path: Path) -> list[str]:
    """The merges ("a b") of a CLIP BPE file (bpe_simple_vocab_16e6.txt.gz, gzip or plain): a header line, then one
    merge per line."""
    path = Path(path)
    try:
        data = path.read_bytes()
        text = (gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data).decode("utf-8")
    except FileNotFoundError:
        raise UserError(f"no such CLIP BPE file: {path} (clip's bpe_simple_vocab_16e6.txt.gz)") from None
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a CLIP BPE merges file ({exc})") from None
    merges = [line for line in text.split("\n")[1:MERGES + 1] if line]
    bad = next((m for m in merges if len(m.split(" ")) != 2), None)
    if bad is not None or not merges:
        raise UserError(f"{path}: not a CLIP BPE merges file (line {bad!r} is not two symbols)")
    return merges


def vocabulary_words(merges: list[str]) -> tuple[str, ...]:
    characters = list(byte_table().values())
    return (*characters, *(c + "</w>" for c in characters), *(m.replace(" ", "") for m in merges), START, END)


class ClipBpe:
    """Captions -> CLIP token ids [batch, context], in the graph."""

    def __init__(self, words: tuple[str, ...], merges: tuple[str, ...], context: int):
        import tensorflow as tf

        self.context = context
        self.start, self.end = words.index(START), words.index(END)
        self.bytes = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
            tf.constant([bytes([b]) for b in range(256)]), tf.constant([c.encode() for c in byte_characters()])),
            default_value="")
        self.ranks = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
            tf.constant(list(merges)), tf.range(len(merges), dtype=tf.int32)), default_value=UNRANKED)
        self.ids_of = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
            tf.constant(list(words)), tf.range(len(words), dtype=tf.int32)), default_value=-1)

    def pieces(self, captions):
        """Ragged [batch, None] pieces of each cleaned caption."""
        import tensorflow as tf

        text = captions
        for _ in range(2):  # html.unescape(html.unescape(text))
            for entity, character in ENTITIES:
                text = tf.strings.regex_replace(text, entity, character)
        text = tf.strings.lower(tf.strings.strip(tf.strings.regex_replace(text, r"\s+", " ")), encoding="utf-8")
        return tf.strings.split(tf.strings.regex_replace(text, PIECES, r" \1 "))

    def symbols(self, pieces):
        """Dense [n, longest] byte characters of n pieces ("" after each piece's end), the last one with "</w>"."""
        import tensorflow as tf

        characters = tf.ragged.map_flat_values(self.bytes.lookup, tf.strings.bytes_split(pieces))
        lengths = characters.row_lengths()
        width = tf.maximum(tf.reduce_max(lengths), 1)  # an empty caption has no piece
        last = tf.one_hot(lengths - 1, tf.cast(width, tf.int32), on_value=True, off_value=False, dtype=tf.bool)
        dense = characters.to_tensor(default_value="", shape=tf.stack([tf.shape(pieces, tf.int64)[0], width]))
        return tf.where(last, tf.strings.join([dense, "</w>"]), dense)

    def merge(self, symbols):
        """The BPE merges of every row of symbols, applied until no adjacent pair has a rank."""
        import tensorflow as tf

        def best_pairs(symbols):
            pairs = tf.strings.join([symbols[:, :-1], symbols[:, 1:]], separator=" ")
            ranks = tf.where(tf.strings.length(symbols[:, 1:]) > 0, self.ranks.lookup(pairs), UNRANKED)
            return ranks, tf.reduce_min(ranks, axis=1, keepdims=True)  # UNRANKED where a row has no pair

        def unfinished(symbols):
            _, best = best_pairs(symbols)
            return tf.reduce_any(best < UNRANKED)

        def step(symbols):
            ranks, best = best_pairs(symbols)
            candidates = tf.transpose((ranks == best) & (best < UNRANKED))
            taken = tf.scan(lambda before, here: here & ~before, candidates,  # left to right, not overlapping
                            initializer=tf.zeros_like(candidates[0]))
            taken = tf.pad(tf.transpose(taken), [[0, 0], [0, 1]])
            following = tf.pad(symbols[:, 1:], [[0, 0], [0, 1]])
            joined = tf.where(taken, tf.strings.join([symbols, following]), symbols)
            kept = ~tf.pad(taken[:, :-1], [[0, 0], [1, 0]]) & (tf.strings.length(symbols) > 0)
            return tf.ragged.boolean_mask(joined, kept).to_tensor(default_value="")

        return tf.while_loop(unfinished, lambda s: (step(s),), (symbols,),
                             shape_invariants=(tf.TensorShape([None, None]),))[0]

    def ids(self, captions):
        """(ids [batch, context] int32: start, the captions' ids, end, 0s; lengths [batch] int32)."""
        import tensorflow as tf

        pieces = self.pieces(captions)
        merged = self.merge(self.symbols(pieces.flat_values))
        per_piece = tf.ragged.boolean_mask(self.ids_of.lookup(merged), tf.strings.length(merged) > 0)
        ids = tf.RaggedTensor.from_row_lengths(per_piece, pieces.row_lengths()).merge_dims(1, 2)
        batch = tf.shape(captions)[0]
        ids = tf.concat([tf.fill([batch, 1], self.start), ids[:, :self.context - 2], tf.fill([batch, 1], self.end)],
                        axis=1)
        return ids.to_tensor(default_value=0, shape=[None, self.context]), tf.cast(ids.row_lengths(), tf.int32)
