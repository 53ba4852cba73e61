"""CLIP's text tower as a text encoder: token ids of the "clip" tokenizer -> {"words", "sentence"}.

OpenAI's layout: token embeddings plus learned positions, pre-norm residual blocks whose attention is causal (each
token sees itself and the tokens before it), a final LayerNorm; the sentence is the feature at the end token (the
highest id of the row) times the text projection. GALIP conditions on that sentence. "words" are every token's feature
times the same projection (so that words and sentence share one size, as every text encoder here gives them).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from t2ictl.errors import UserError
from t2ictl.models.clip import ResidualBlock, block_values


@keras.saving.register_keras_serializable("t2ictl")
class ClipTextTower(layers.Layer):
    def __init__(self, vocab_size: int, context: int, width: int, depth: int, heads: int, embed_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.context, self.width = vocab_size, context, width
        self.depth, self.heads, self.embed_dim = depth, heads, embed_dim
        self.token_embedding = layers.Embedding(vocab_size, width, name="token_embedding")
        self.blocks = [ResidualBlock(width, heads, causal=True, name=f"block_{i}") for i in range(depth)]
        self.ln_final = layers.LayerNormalization(epsilon=1e-5, name="ln_final")

    def build(self, tokens_shape=None):
        self.positional_embedding = self.add_weight(shape=(self.context, self.width), name="positional_embedding",
                                                    initializer=keras.initializers.RandomNormal(stddev=0.01))
        self.text_projection = self.add_weight(shape=(self.width, self.embed_dim), name="text_projection",
                                               initializer=keras.initializers.RandomNormal(stddev=self.width**-0.5))
        self.token_embedding.build((None, self.context))
        for block in self.blocks:
            block.build((None, self.context, self.width))
        self.ln_final.build((None, self.context, self.width))

    def call(self, tokens):
        x = self.token_embedding(tokens) + ops.cast(self.positional_embedding, self.compute_dtype)[None]
        for block in self.blocks:
            x = block(x)
        words = ops.matmul(self.ln_final(x), ops.cast(self.text_projection, self.compute_dtype))
        end = ops.argmax(tokens, axis=-1)  # the end token has the highest id
        sentence = ops.take_along_axis(words, end[:, None, None], axis=1)[:, 0]
        return {"words": words, "sentence": sentence}

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size, "context": self.context, "width": self.width,
                "depth": self.depth, "heads": self.heads, "embed_dim": self.embed_dim}


def build_clip_text(vocab_size: int, context: int, width: int, depth: int, heads: int, embed_dim: int,
                    name: str = "text_encoder") -> keras.Model:
    tokens = keras.Input(shape=(context,), dtype="int32", name="tokens")
    out = ClipTextTower(vocab_size, context, width, depth, heads, embed_dim, name="clip_text")(tokens)
    return keras.Model(tokens, out, name=name)


def clip_text_from_openai_state(state: dict, source: str) -> keras.Model:
    """The text tower of OpenAI's released CLIP from its state dict (token_embedding.weight, positional_embedding,
    transformer.resblocks.*, ln_final.*, text_projection); heads = width / 64, CLIP's rule."""
    def get(name: str) -> np.ndarray:
        if name not in state:
            raise UserError(f"{source}: {name} is missing; not an OpenAI CLIP state dict with its text tower")
        return np.asarray(state[name], dtype=np.float32)

    embedding, positions, projection = get("token_embedding.weight"), get("positional_embedding"), get(
        "text_projection")
    width = embedding.shape[1]
    depth = len({k.split(".")[2] for k in state if k.startswith("transformer.resblocks.")})
    heads = max(1, width // 64)
    model = build_clip_text(embedding.shape[0], positions.shape[0], width, depth, heads, projection.shape[1])
    tower = model.get_layer("clip_text")
    values = {"token_embedding/embeddings": embedding, "positional_embedding": positions,
              "text_projection": projection, "ln_final/gamma": get("ln_final.weight"),
              "ln_final/beta": get("ln_final.bias")}
    for i in range(depth):
        values.update(block_values(get, f"transformer.resblocks.{i}", f"block_{i}", width, heads))
    for weight in tower.weights:
        name = weight.path.split("/", 1)[1]
        if tuple(values[name].shape) != tuple(weight.shape):
            raise UserError(f"{source}: {name} has shape {values[name].shape}, the text tower needs {weight.shape}")
        weight.assign(values[name])
    return model
