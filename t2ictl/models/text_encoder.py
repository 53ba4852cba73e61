"""The DAMSM text encoder (AttnGAN's RNN_ENCODER): embedding, dropout, one bi-directional LSTM layer.

Outputs one feature per token ("words", [B, T, D], zero at padding) and a sentence feature ("sentence", [B, D]): the
final hidden states of both directions, concatenated, taken at the last real token (padding is masked).
AttnGAN's defaults: 300-d embeddings, dropout 0.5, D = 256 (128 per direction), embeddings initialised U(-0.1, 0.1).
"""

from __future__ import annotations

import keras
from keras import layers, ops


def build_text_encoder(vocab_size: int, max_words: int, embedding_dim: int = 300, text_dim: int = 256,
                       dropout: float = 0.5, name: str = "text_encoder") -> keras.Model:
    if text_dim % 2:
        raise ValueError(f"text_dim must be even (two LSTM directions), got {text_dim}")
    tokens = keras.Input(shape=(max_words,), dtype="int32", name="tokens")
    embedded = layers.Embedding(
        vocab_size, embedding_dim, mask_zero=True, name="embedding",
        embeddings_initializer=keras.initializers.RandomUniform(-0.1, 0.1),
    )(tokens)
    embedded = layers.Dropout(dropout, name="dropout")(embedded)
    lstm = layers.Bidirectional(
        layers.LSTM(text_dim // 2, return_sequences=True, return_state=True), name="bilstm"
    )
    words, forward_h, _, backward_h, _ = lstm(embedded)
    mask = ops.expand_dims(ops.cast(ops.not_equal(tokens, 0), words.dtype), -1)
    words = layers.Multiply(name="words")([words, mask])
    sentence = layers.Concatenate(name="sentence")([forward_h, backward_h])
    return keras.Model(tokens, {"words": words, "sentence": sentence}, name=name)
