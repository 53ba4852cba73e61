"""The frozen CLIP image encoder (a ViT) that GALIP uses in its generator's bridge and in its discriminator.

The ViT is built in Keras with CLIP's layout: a patch convolution without bias, a class token, learned positions,
a LayerNorm before the blocks, pre-norm residual blocks (LayerNorm, multi-head self-attention, LayerNorm, MLP of width
4x with QuickGELU), a LayerNorm on the class token and a projection to the joint embedding. ViT-B/32 has width 768,
12 blocks of 12 heads, patch 32, 224 px input and a 512-d embedding; `TINY` has the same layout at a size tests can run.

Images enter in [-1, 1] at any size: they are resized (bilinear) to the ViT's input size and normalised with CLIP's
mean and standard deviation. Besides `encode` (images -> grid tokens of chosen blocks and the embedding) the ViT offers
`map`, GALIP's use of it inside the generator: a feature map takes the place of the patch embedding and one prompt
token joins the sequence for each chosen block (and leaves it after that block).

Where the weights come from (`model.clip` in a recipe):
- "tiny": fixed random weights (the same in every process) with the TINY shapes (tests and quick runs);
- OpenAI's released `.pt` file (ViT-B-32.pt, a TorchScript archive): its tensors are read by name from the archive
  (t2ictl/torch_files.py), its code never runs, torch is not needed;
- a `.npz` file of OpenAI CLIP's state dict (the released ViT-B/32, e.g. saved from PyTorch with
  `numpy.savez(path, **{k: v.numpy() for k, v in model.state_dict().items()})`): converted on load;
- a `.weights.h5` file written by `save_weights` (HDF5: the spec as file attributes, one dataset per weight, named
  by the weight's path inside the ViT, e.g. "block_3/attention/query/kernel");
- a SavedModel folder or a TF-Hub handle holding a SavedModel written by `save_saved_model` (variables `spec`,
  `names`, `values`, and an `encode` function images -> (tokens of every block, embedding)). A handle that is neither
  cached nor reachable is an error that names it and the recipe key.
The ViT is frozen: its weights are never trainable.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from t2ictl.errors import UserError
from t2ictl.fileio import atomic_path
from t2ictl.torch_files import read_torchscript_state

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIP's image normalisation (OpenAI clip/clip.py)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
RECIPE_KEY = "model.clip"


@dataclass(frozen=True)
class VisionSpec:
    width: int
    layers: int
    patch: int
    image_size: int
    embed_dim: int
    heads: int

    @property
    def grid(self) -> int:
        return self.image_size // self.patch


VIT_B32 = VisionSpec(width=768, layers=12, patch=32, image_size=224, embed_dim=512, heads=12)
TINY = VisionSpec(width=32, layers=4, patch=8, image_size=56, embed_dim=16, heads=2)  # a 7x7 grid like ViT-B/32
TINY_SEED = 0  # "tiny" is one fixed random ViT: a run trained with it samples with the same one


def _normal(stddev: float, seed: int | None, offset: int) -> keras.initializers.Initializer:
    """N(0, stddev); with a seed, the same values in every process (the "tiny" ViT must not change between runs)."""
    return keras.initializers.RandomNormal(stddev=stddev, seed=None if seed is None else seed + offset)


class ResidualBlock(layers.Layer):
    """x + attention(ln_1(x)), then x + mlp(ln_2(x)); the MLP is 4x wide with QuickGELU, as CLIP."""

    def __init__(self, width: int, heads: int, seed: int | None = None, causal: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.width, self.heads, self.causal = width, heads, causal  # causal: CLIP's text tower, each token sees back
        self.ln_1 = layers.LayerNormalization(epsilon=1e-5, name="ln_1")
        self.attention = layers.MultiHeadAttention(heads, width // heads, kernel_initializer=_normal(
            width**-0.5, seed, 0), name="attention")
        self.ln_2 = layers.LayerNormalization(epsilon=1e-5, name="ln_2")
        self.mlp_in = layers.Dense(4 * width, kernel_initializer=_normal((2 * width) ** -0.5, seed, 1),
                                   name="mlp_in")
        self.mlp_out = layers.Dense(width, kernel_initializer=_normal((4 * width) ** -0.5, seed, 2), name="mlp_out")

    def build(self, tokens_shape):
        self.ln_1.build(tokens_shape)
        self.attention.build(tokens_shape, tokens_shape)
        self.ln_2.build(tokens_shape)
        self.mlp_in.build(tokens_shape)
        self.mlp_out.build(tuple(tokens_shape[:-1]) + (4 * self.width,))

    def call(self, tokens):
        h = self.ln_1(tokens)
        tokens = tokens + self.attention(h, h, use_causal_mask=self.causal)
        h = self.mlp_in(self.ln_2(tokens))
        h = h * ops.sigmoid(1.702 * h)  # QuickGELU
        return tokens + self.mlp_out(h)


class ClipVision(layers.Layer):
    """CLIP's ViT image tower; `call(images)` gives (grid tokens of every block [B, L, g, g, W], embedding [B, E]).

    Weights start as CLIP's (normal, std width^-0.5 for the class token, positions and projection); `seed` makes
    them the same in every process."""

    def __init__(self, spec: VisionSpec, seed: int | None = None, name: str = "clip_vision", **kwargs):
        super().__init__(name=name, **kwargs)
        self.spec, self.seed = spec, seed
        self.patch_embedding = layers.Conv2D(spec.width, spec.patch, strides=spec.patch, use_bias=False,
                                             kernel_initializer=_normal((3 * spec.patch**2) ** -0.5, seed, 0),
                                             name="patch_embedding")
        self.ln_pre = layers.LayerNormalization(epsilon=1e-5, name="ln_pre")
        self.blocks = [ResidualBlock(spec.width, spec.heads, None if seed is None else seed + 10 * (i + 1),
                                     name=f"block_{i}") for i in range(spec.layers)]
        self.ln_post = layers.LayerNormalization(epsilon=1e-5, name="ln_post")

    def build(self, images_shape=None):
        s = self.spec
        self.class_embedding = self.add_weight(shape=(s.width,), initializer=_normal(s.width**-0.5, self.seed, 1),
                                               name="class_embedding")
        self.positional_embedding = self.add_weight(shape=(s.grid * s.grid + 1, s.width),
                                                    initializer=_normal(s.width**-0.5, self.seed, 2),
                                                    name="positional_embedding")
        self.projection = self.add_weight(shape=(s.width, s.embed_dim),
                                          initializer=_normal(s.width**-0.5, self.seed, 3), name="projection")
        self.patch_embedding.build((None, s.image_size, s.image_size, 3))
        tokens = (None, s.grid * s.grid + 1, s.width)
        self.ln_pre.build(tokens)
        for block in self.blocks:
            block.build(tokens)
        self.ln_post.build((None, s.width))

    def preprocess(self, images) -> tf.Tensor:
        """[-1, 1] images of any size -> CLIP's normalised input at its image size."""
        s = self.spec
        x = tf.image.resize(tf.cast(images, "float32"), (s.image_size, s.image_size), method="bilinear")
        x = ((x + 1.0) * 0.5 - tf.constant(CLIP_MEAN)) / tf.constant(CLIP_STD)
        return ops.cast(x, self.compute_dtype)

    def _sequence(self, grid) -> tf.Tensor:
        """[B, g, g, W] patch features -> [B, 1 + g*g, W]: class token first, positions added, ln_pre."""
        s = self.spec
        grid = ops.cast(grid, self.compute_dtype)
        batch = ops.shape(grid)[0]
        tokens = ops.reshape(grid, (batch, s.grid * s.grid, s.width))
        cls = ops.broadcast_to(ops.cast(self.class_embedding, tokens.dtype)[None, None, :], (batch, 1, s.width))
        tokens = ops.concatenate([cls, tokens], axis=1) + ops.cast(self.positional_embedding, tokens.dtype)[None]
        return self.ln_pre(tokens)

    def _grid(self, tokens) -> tf.Tensor:
        """[B, 1 + g*g, W] -> the patch tokens as a map [B, g, g, W]."""
        s = self.spec
        return ops.reshape(tokens[:, 1:], (-1, s.grid, s.grid, s.width))

    def encode(self, images, block_ids) -> tuple[list[tf.Tensor], tf.Tensor]:
        """(grid tokens after each block in `block_ids` [B, g, g, W], embedding [B, E])."""
        return self.encode_pixels(self.preprocess(images), block_ids)

    def encode_pixels(self, pixels, block_ids) -> tuple[list[tf.Tensor], tf.Tensor]:
        """`encode` of pixels already at the ViT's size and normalised as CLIP's input."""
        tokens = self._sequence(self.patch_embedding(ops.cast(pixels, self.compute_dtype)))
        maps = []
        for index, block in enumerate(self.blocks):
            tokens = block(tokens)
            if index in block_ids:
                maps.append(self._grid(tokens))
        pooled = self.ln_post(tokens[:, 0])
        return maps, ops.matmul(pooled, ops.cast(self.projection, pooled.dtype))

    def map(self, grid, prompts, block_ids) -> tf.Tensor:
        """GALIP's bridge: `grid` [B, g, g, W] in place of the patch embedding, prompt k [B, W] appended to the
        sequence of block block_ids[k] only; returns the patch tokens after the last block as [B, g, g, W]."""
        tokens = self._sequence(grid)
        prompts = ops.cast(prompts, tokens.dtype)
        for index, block in enumerate(self.blocks):
            if index in block_ids:
                k = list(block_ids).index(index)
                tokens = block(ops.concatenate([tokens, prompts[:, k:k + 1]], axis=1))[:, :-1]
            else:
                tokens = block(tokens)
        return self._grid(tokens)

    def call(self, images):
        maps, embedding = self.encode(images, range(self.spec.layers))
        return ops.stack(maps, axis=1), embedding


def build_vision(spec: VisionSpec, seed: int | None = None) -> ClipVision:
    """A frozen ViT with fresh (random) weights; with a seed, the same weights in every process."""
    vision = ClipVision(spec, seed)
    vision.build()
    vision.trainable = False
    return vision


def weight_names(vision: ClipVision) -> list[str]:
    """Each weight's path inside the ViT, without the ViT's own name: "block_0/ln_1/gamma", "projection", ..."""
    return [w.path.split("/", 1)[1] for w in vision.weights]


def assign_weights(vision: ClipVision, values: dict[str, np.ndarray], source: str) -> None:
    names = weight_names(vision)
    missing = sorted(set(names) - set(values))
    if missing:
        raise UserError(f"{RECIPE_KEY} = {source!r}: the weights lack {missing[0]} (and {len(missing) - 1} more); "
                        "it is not a CLIP ViT written by t2ictl")
    for name, weight in zip(names, vision.weights):
        if tuple(values[name].shape) != tuple(weight.shape):
            raise UserError(f"{RECIPE_KEY} = {source!r}: weight {name} has shape {tuple(values[name].shape)}, "
                            f"expected {tuple(weight.shape)}")
        weight.assign(values[name])


def save_weights(vision: ClipVision, path: Path) -> None:
    """Write the ViT to an HDF5 weights file: spec as file attributes, one dataset per weight name."""
    import h5py

    with atomic_path(Path(path)) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = "t2ictl-clip-vision"
            for key, value in asdict(vision.spec).items():
                f.attrs[key] = value
            for name, weight in zip(weight_names(vision), vision.weights):
                f.create_dataset(name, data=np.asarray(weight.numpy()))


def load_weights_file(path: Path, source: str) -> ClipVision:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != "t2ictl-clip-vision":
                raise UserError(f"{RECIPE_KEY} = {source!r}: {path} is not a CLIP ViT weights file written by "
                                "t2ictl (no format attribute)")
            spec = VisionSpec(**{key: int(f.attrs[key]) for key in VisionSpec.__dataclass_fields__})
            values: dict[str, np.ndarray] = {}
            f.visititems(lambda name, item: values.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset)
                         else None)
    except OSError as exc:
        raise UserError(f"{RECIPE_KEY} = {source!r}: cannot read {path}: {exc}") from None
    vision = build_vision(spec)
    assign_weights(vision, values, source)
    return vision


class _VisionExport(tf.Module):
    def __init__(self, vision: ClipVision):
        super().__init__()
        self.vision = vision
        self.spec = tf.Variable([getattr(vision.spec, k) for k in VisionSpec.__dataclass_fields__], dtype=tf.int64,
                                trainable=False, name="spec")
        self.names = tf.Variable(weight_names(vision), trainable=False, name="names")
        self.values = [w.value for w in vision.weights]  # the ViT's own tf.Variables: saved once

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def encode(self, images):
        return self.vision(images)


def save_saved_model(vision: ClipVision, folder: Path) -> None:
    """Write the ViT as a SavedModel that `load_clip_vision` reads back (and TF-Hub can serve)."""
    tf.saved_model.save(_VisionExport(vision), str(folder))


def _from_saved_model(loaded, source: str) -> ClipVision:
    if not all(hasattr(loaded, key) for key in ("spec", "names", "values")):
        raise UserError(f"{RECIPE_KEY} = {source!r}: the SavedModel has no spec/names/values variables; write it "
                        "with t2ictl.models.clip.save_saved_model")
    spec = VisionSpec(*[int(v) for v in loaded.spec.numpy()])
    names = [n.decode("utf-8") for n in loaded.names.numpy()]
    vision = build_vision(spec)
    assign_weights(vision, {n: v.numpy() for n, v in zip(names, loaded.values)}, source)
    return vision


def from_openai_state(state, source: str) -> ClipVision:
    """The ViT of OpenAI's released CLIP, from its state dict ("visual.conv1.weight", "visual.transformer.resblocks.
    0.attn.in_proj_weight", ...; PyTorch layouts: linear weights [out, in], conv [out, in, kh, kw]). The spec is read
    from the shapes; heads = width / 64, CLIP's rule."""
    def get(name: str) -> np.ndarray:
        key = f"visual.{name}"
        if key not in state:
            raise UserError(f"{RECIPE_KEY} = {source!r}: {key} is missing; it is not an OpenAI CLIP ViT state dict")
        return np.asarray(state[key], dtype=np.float32)

    conv, positions, projection = get("conv1.weight"), get("positional_embedding"), get("proj")
    width, patch = conv.shape[0], conv.shape[2]
    grid = math.isqrt(positions.shape[0] - 1)
    depth = len({k.split(".")[3] for k in state if k.startswith("visual.transformer.resblocks.")})
    heads = max(1, width // 64)
    spec = VisionSpec(width=width, layers=depth, patch=patch, image_size=grid * patch, embed_dim=projection.shape[1],
                      heads=heads)
    values = {"patch_embedding/kernel": conv.transpose(2, 3, 1, 0), "class_embedding": get("class_embedding"),
              "positional_embedding": positions, "projection": projection}
    for norm in ("ln_pre", "ln_post"):
        values[f"{norm}/gamma"], values[f"{norm}/beta"] = get(f"{norm}.weight"), get(f"{norm}.bias")
    for i in range(depth):
        values.update(block_values(get, f"transformer.resblocks.{i}", f"block_{i}", width, heads))
    vision = build_vision(spec)
    assign_weights(vision, values, source)
    return vision


def block_values(get, block: str, ours: str, width: int, heads: int) -> dict[str, np.ndarray]:
    """One residual block of OpenAI's layout (`get(name)` gives its arrays) as the weights of a ResidualBlock."""
    values = {}
    in_weight, in_bias = get(f"{block}.attn.in_proj_weight"), get(f"{block}.attn.in_proj_bias")
    for k, name in enumerate(("query", "key", "value")):  # in_proj stacks q, k, v along its output axis
        rows = slice(k * width, (k + 1) * width)
        values[f"{ours}/attention/{name}/kernel"] = in_weight[rows].T.reshape(width, heads, width // heads)
        values[f"{ours}/attention/{name}/bias"] = in_bias[rows].reshape(heads, width // heads)
    values[f"{ours}/attention/attention_output/kernel"] = (
        get(f"{block}.attn.out_proj.weight").T.reshape(heads, width // heads, width))
    values[f"{ours}/attention/attention_output/bias"] = get(f"{block}.attn.out_proj.bias")
    for norm in ("ln_1", "ln_2"):
        values[f"{ours}/{norm}/gamma"] = get(f"{block}.{norm}.weight")
        values[f"{ours}/{norm}/beta"] = get(f"{block}.{norm}.bias")
    for layer, theirs in (("mlp_in", "c_fc"), ("mlp_out", "c_proj")):
        values[f"{ours}/{layer}/kernel"] = get(f"{block}.mlp.{theirs}.weight").T
        values[f"{ours}/{layer}/bias"] = get(f"{block}.mlp.{theirs}.bias")
    return values


def hub_cache_folder(handle: str) -> Path:
    """Where tensorflow_hub keeps a downloaded handle (its cache naming: sha1 of the handle)."""
    cache = os.environ.get("TFHUB_CACHE_DIR") or os.path.join(tempfile.gettempdir(), "tfhub_modules")
    return Path(cache) / hashlib.sha1(handle.encode("utf-8")).hexdigest()


def load_clip_vision(source: str) -> ClipVision:
    """The frozen CLIP ViT named by `model.clip`: "tiny", OpenAI's released TorchScript archive (ViT-B-32.pt, read
    without running it), an OpenAI .npz state dict, a .weights.h5 file, a SavedModel folder or a TF-Hub handle."""
    if source == "tiny":
        return build_vision(TINY, seed=TINY_SEED)
    path = Path(source).expanduser()
    if source.endswith(".pt"):
        return from_openai_state(read_torchscript_state(path), source)
    if source.endswith(".npz"):
        if not path.is_file():
            raise UserError(f"{RECIPE_KEY} = {source!r}: no such file (OpenAI CLIP's state dict saved with "
                            "numpy.savez)")
        with np.load(path) as state:
            return from_openai_state(dict(state), source)
    if source.endswith(".h5"):
        if not path.is_file():
            raise UserError(f"{RECIPE_KEY} = {source!r}: no such weights file; convert CLIP ViT-B/32 to it or set "
                            f'{RECIPE_KEY} to a SavedModel folder, a TF-Hub handle or "tiny"')
        return load_weights_file(path, source)
    if path.is_dir():
        try:
            loaded = tf.saved_model.load(str(path))
        except (OSError, ValueError, tf.errors.OpError) as exc:
            raise UserError(f"{RECIPE_KEY} = {source!r}: not a readable SavedModel: {str(exc).splitlines()[0]}") \
                from None
        return _from_saved_model(loaded, source)
    if "://" not in source:
        raise UserError(f"{RECIPE_KEY} = {source!r}: no such folder, .npz or .weights.h5 file, and not a TF-Hub "
                        "handle (https://...)")
    import tensorflow_hub as hub

    try:
        loaded = hub.load(source)
    except Exception as exc:  # noqa: BLE001 - tensorflow_hub raises many kinds of network and format errors
        raise UserError(f"{RECIPE_KEY} = {source!r}: cannot load the TF-Hub handle (offline and not in the cache "
                        f"{hub_cache_folder(source)}?): {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                        f"; download it once while online, or set {RECIPE_KEY} to a local SavedModel folder or "
                        ".weights.h5 file") from None
    return _from_saved_model(loaded, source)
