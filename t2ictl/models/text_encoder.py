"""The DAMSM text encoder (AttnGAN's RNN_ENCODER): embedding, dropout, one bi-directional LSTM layer.

Outputs one feature per token ("words", [B, T, D], zero at padding) and a sentence feature ("sentence", [B, D]): the
final hidden states of both directions, concatenated, taken at the last real token (padding is masked).
AttnGAN's defaults: 300-d embeddings, dropout 0.5, D = 256 (128 per direction), embeddings initialised U(-0.1, 0.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from t2ictl import replicas


@dataclass
class TextFeatures:
    """What the frozen text encoder gives a generator and its losses."""

    words: tf.Tensor  # [B, T, D]
    sentence: tf.Tensor  # [B, D]
    mask: tf.Tensor  # [B, T] float, 1 at real tokens

    def generator_inputs(self, noise) -> dict:
        """Every backbone's generator input dict for these texts and noise [B, Z]."""
        return {"noise": noise, "words": self.words, "sentence": self.sentence, "mask": self.mask}


def text_features(text_encoder: keras.Model, tokens) -> TextFeatures:
    """Frozen text features of token ids; padding positions have mask 0."""
    out = text_encoder(tokens, training=False)
    mask = tf.cast(tf.not_equal(tokens, 0), tf.float32)
    return TextFeatures(tf.stop_gradient(out["words"]), tf.stop_gradient(out["sentence"]), mask)


@keras.saving.register_keras_serializable(package="t2ictl")
class GlobalBatchDropout(layers.Dropout):
    """Keras's Dropout, its mask one draw over the global batch: under tf.distribute each replica keeps the rows one
    device would draw (Keras's Dropout draws a mask per replica, so the run depended on the replica count)."""

    batch_blocks = 1  # blocks of rows in the batch (t2ictl.replicas); pretraining sets 2 when it merges two branches

    def call(self, inputs, training=False):
        if not training or self.rate == 0 or replicas.layout()[1] == 1:
            return super().call(inputs, training=training)
        rows = tf.shape(inputs)[0] * replicas.layout()[1]
        global_mask = super().call(tf.ones(tf.concat([[rows], tf.shape(inputs)[1:]], 0), inputs.dtype), training)
        return inputs * replicas.local_rows(global_mask, self.batch_blocks)


def build_text_encoder(vocab_size: int, max_words: int, embedding_dim: int = 300, text_dim: int = 256,
                       dropout: float = 0.5, name: str = "text_encoder") -> keras.Model:
    if text_dim % 2:
        raise ValueError(f"text_dim must be even (two LSTM directions), got {text_dim}")
    tokens = keras.Input(shape=(max_words,), dtype="int32", name="tokens")
    embedded = layers.Embedding(
        vocab_size, embedding_dim, mask_zero=True, name="embedding",
        embeddings_initializer=keras.initializers.RandomUniform(-0.1, 0.1),
    )(tokens)
    embedded = GlobalBatchDropout(dropout, name="dropout")(embedded)
    lstm = layers.Bidirectional(
        layers.LSTM(text_dim // 2, return_sequences=True, return_state=True), name="bilstm"
    )
    words, forward_h, _, backward_h, _ = lstm(embedded)
    mask = ops.expand_dims(ops.cast(ops.not_equal(tokens, 0), words.dtype), -1)
    words = layers.Multiply(name="words")([words, mask])
    sentence = layers.Concatenate(name="sentence")([forward_h, backward_h])
    return keras.Model(tokens, {"words": words, "sentence": sentence}, name=name)


def encode_captions(text_encoder: keras.Model, tokenizer, captions: list[str], batch_size: int = 256
                    ) -> Iterator[tuple[np.ndarray, dict]]:
    """(token ids [n, T], the encoder's outputs) for each chunk of `batch_size` captions, tokenized in the graph."""
    # traced once for every chunk: eagerly, Keras's per-layer overhead (the LSTM's above all) costs more than the chunk
    encode = tf.function(lambda tokens: text_encoder(tokens, training=False),
                         input_signature=[tf.TensorSpec([None, tokenizer.max_words], tf.int32)])
    for start in range(0, len(captions), batch_size):
        tokens = tokenizer.ids(tf.constant(captions[start:start + batch_size]))[0]
        yield tokens.numpy(), encode(tokens)
