"""GALIP's official modules written out in NumPy, NCHW, from state dicts with the official names: NetG (with its
CLIP_Mapper), NetD, NetC, CLIP_IMG_ENCODER (the official input transform) and CLIP_TXT_ENCODER. The independent
reference the import is checked against; `galip_layout` is the official parameter layout as a function of the
sizes (tests/fixtures/galip_vit_b32.txt checks it at ViT-B/32's)."""

from __future__ import annotations

import math

import numpy as np
from numpy_dfgan import affine, conv2d, leaky, linear

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711])


def fusion_layout(prefix: str, channels: int, cond: int) -> list:
    return [(f"{prefix}.{a}.{part}.{linear}.{kind}", (channels, fan) if kind == "weight" else (channels,))
            for a in ("affine0", "affine1") for part in ("fc_gamma", "fc_beta")
            for linear, fan in (("linear1", cond), ("linear2", channels)) for kind in ("weight", "bias")]


def vit_layout(width: int, grid: int, patch: int, layers: int, prefix: str = "") -> list:
    out = [(f"{prefix}class_embedding", (width,)), (f"{prefix}positional_embedding", (grid * grid + 1, width)),
           (f"{prefix}conv1.weight", (width, 3, patch, patch)), (f"{prefix}ln_pre.weight", (width,)),
           (f"{prefix}ln_pre.bias", (width,))]
    return out + [entry for i in range(layers) for entry in block_layout(f"{prefix}transformer.resblocks.{i}", width)]


def block_layout(prefix: str, width: int) -> list:
    return [(f"{prefix}.attn.in_proj_weight", (3 * width, width)), (f"{prefix}.attn.in_proj_bias", (3 * width,)),
            (f"{prefix}.attn.out_proj.weight", (width, width)), (f"{prefix}.attn.out_proj.bias", (width,)),
            (f"{prefix}.ln_1.weight", (width,)), (f"{prefix}.ln_1.bias", (width,)),
            (f"{prefix}.mlp.c_fc.weight", (4 * width, width)), (f"{prefix}.mlp.c_fc.bias", (4 * width,)),
            (f"{prefix}.mlp.c_proj.weight", (width, 4 * width)), (f"{prefix}.mlp.c_proj.bias", (width,)),
            (f"{prefix}.ln_2.weight", (width,)), (f"{prefix}.ln_2.bias", (width,))]


def galip_layout(nf, z, text, width, grid, patch, layers, image_size, code=64, mid=32, mappers=4) -> dict:
    """{"netG", "netD", "netC": [(name, shape)] in state-dict order} of models/GALIP.py."""
    cond = z + text
    g = [("fc_code.weight", (grid * grid * code, z)), ("fc_code.bias", (grid * grid * code,))]
    for i in range(mappers):
        p = f"mapping.FBlocks.{i}"
        g += [(f"{p}.conv1.weight", (mid, code, 3, 3)), (f"{p}.conv1.bias", (mid,)), *fusion_layout(f"{p}.fuse1", mid,
                                                                                                    cond),
              (f"{p}.conv2.weight", (code, mid, 3, 3)), (f"{p}.conv2.bias", (code,)),
              *fusion_layout(f"{p}.fuse2", code, cond)]
    g += [("mapping.conv_fuse.weight", (width, code, 5, 5)), ("mapping.conv_fuse.bias", (width,)),
          *vit_layout(width, grid, patch, layers, "mapping.CLIP_ViT."),
          ("mapping.conv.weight", (8 * nf, width, 5, 5)), ("mapping.conv.bias", (8 * nf,)),
          ("mapping.fc_prompt.weight", (8 * width, cond)), ("mapping.fc_prompt.bias", (8 * width,))]
    widths = [nf * min(2**i, 8) for i in range(int(math.log2(image_size)) - 1)][::-1]
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        p = f"GBlocks.{i}"
        g += [(f"{p}.c1.weight", (b, a, 3, 3)), (f"{p}.c1.bias", (b,)), (f"{p}.c2.weight", (b, b, 3, 3)),
              (f"{p}.c2.bias", (b,)), *fusion_layout(f"{p}.fuse1", a, cond), *fusion_layout(f"{p}.fuse2", b, cond)]
        if a != b:
            g += [(f"{p}.c_sc.weight", (b, a, 1, 1)), (f"{p}.c_sc.bias", (b,))]
    g += [("to_rgb.1.weight", (3, nf, 3, 3)), ("to_rgb.1.bias", (3,))]
    d = []
    for p, a, b, clip in (("DBlocks.0", width, width, True), ("DBlocks.1", width, width, True),
                          ("main", width, 8 * nf, False)):
        d += [(f"{p}.gamma", (1,)), *([(f"{p}.beta", (1,))] if clip else []), (f"{p}.conv_r.0.weight", (b, a, 3, 3)),
              (f"{p}.conv_r.2.weight", (b, b, 3, 3)), (f"{p}.conv_s.weight", (b, a, 1, 1)), (f"{p}.conv_s.bias", (b,))]
    c = [("joint_conv.0.weight", (2 * nf, 8 * nf + text, 4, 4)), ("joint_conv.2.weight", (1, 2 * nf, grid - 3,
                                                                                            grid - 3))]
    return {"netG": g, "netD": d, "netC": c}


def layer_norm(state, prefix: str, x):
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-5) * state[f"{prefix}.weight"] + state[f"{prefix}.bias"]


def residual_block(state, prefix: str, x, heads: int, causal: bool = False):
    """CLIP's ResidualAttentionBlock on [B, L, W] (batch first)."""
    batch, length, width = x.shape
    hd = width // heads
    h = layer_norm(state, f"{prefix}.ln_1", x)
    qkv = h @ state[f"{prefix}.attn.in_proj_weight"].T + state[f"{prefix}.attn.in_proj_bias"]
    q, k, v = (t.reshape(batch, length, heads, hd).transpose(0, 2, 1, 3) for t in np.split(qkv, 3, axis=-1))
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd)
    if causal:
        scores = np.where(np.tril(np.ones((length, length), bool)), scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    attended = (weights @ v).transpose(0, 2, 1, 3).reshape(batch, length, width)
    x = x + attended @ state[f"{prefix}.attn.out_proj.weight"].T + state[f"{prefix}.attn.out_proj.bias"]
    h = layer_norm(state, f"{prefix}.ln_2", x) @ state[f"{prefix}.mlp.c_fc.weight"].T + state[f"{prefix}.mlp.c_fc.bias"]
    h = h / (1 + np.exp(-1.702 * h))
    return x + h @ state[f"{prefix}.mlp.c_proj.weight"].T + state[f"{prefix}.mlp.c_proj.bias"]


def vit_tokens(vit, grid_features, heads: int, layers: int, prompts=None, keep=()):
    """The ViT's blocks on a [B, W, g, g] map (class token first, positions, ln_pre); prompt k joins block k + 1
    (CLIP_Mapper); returns the tokens after the last block and after each block in `keep`."""
    batch, width = grid_features.shape[:2]
    x = grid_features.reshape(batch, width, -1).transpose(0, 2, 1)
    x = np.concatenate([np.broadcast_to(vit["class_embedding"], (batch, 1, width)), x], axis=1)
    x = layer_norm(vit, "ln_pre", x + vit["positional_embedding"])
    kept = []
    for i in range(layers):
        block = f"transformer.resblocks.{i}"
        if prompts is not None and 1 <= i <= 8:
            x = residual_block(vit, block, np.concatenate([x, prompts[:, i - 1:i]], axis=1), heads)[:, :-1]
        else:
            x = residual_block(vit, block, x, heads)
        if i in keep:
            kept.append(x)
    return x, kept


def to_map(tokens, grid: int):
    return tokens[:, 1:].transpose(0, 2, 1).reshape(len(tokens), -1, grid, grid)


def nearest(x, size: int):
    rows = np.arange(size) * x.shape[2] // size
    cols = np.arange(size) * x.shape[3] // size
    return x[:, :, rows][:, :, :, cols]


def dfblk(state, prefix: str, x, cond):
    return leaky(affine(state, f"{prefix}.affine1", leaky(affine(state, f"{prefix}.affine0", x, cond)), cond))


def net_g(state, vit, noise, sentence, grid: int, heads: int, layers: int) -> np.ndarray:
    cond = np.concatenate([noise, sentence], axis=1)
    x = linear(state, "fc_code", noise).reshape(len(noise), -1, grid, grid)
    index = 0
    while f"mapping.FBlocks.{index}.conv1.weight" in state:
        p = f"mapping.FBlocks.{index}"
        h = dfblk(state, f"{p}.fuse1", conv2d(x, state[f"{p}.conv1.weight"], state[f"{p}.conv1.bias"], padding=1), cond)
        x = x + dfblk(state, f"{p}.fuse2", conv2d(h, state[f"{p}.conv2.weight"], state[f"{p}.conv2.bias"], padding=1),
                      cond)
        index += 1
    fuse = conv2d(x, state["mapping.conv_fuse.weight"], state["mapping.conv_fuse.bias"], padding=2)
    prompts = linear(state, "mapping.fc_prompt", cond).reshape(len(noise), 8, -1)
    mapped = to_map(vit_tokens(vit, fuse, heads, layers, prompts)[0], grid)
    x = conv2d(fuse + 0.1 * mapped, state["mapping.conv.weight"], state["mapping.conv.bias"], padding=2)
    index, size = 0, 4
    while f"GBlocks.{index}.c1.weight" in state:
        p = f"GBlocks.{index}"
        size = 224 if f"GBlocks.{index + 1}.c1.weight" not in state else size * 2
        h = nearest(x, size)
        r = conv2d(dfblk(state, f"{p}.fuse1", h, cond), state[f"{p}.c1.weight"], state[f"{p}.c1.bias"], padding=1)
        r = conv2d(dfblk(state, f"{p}.fuse2", r, cond), state[f"{p}.c2.weight"], state[f"{p}.c2.bias"], padding=1)
        if f"{p}.c_sc.weight" in state:
            h = conv2d(h, state[f"{p}.c_sc.weight"], state[f"{p}.c_sc.bias"])
        x = h + r
        index += 1
    return conv2d(leaky(x), state["to_rgb.1.weight"], state["to_rgb.1.bias"], padding=1)


def clip_image_features(vit, images, grid: int, patch: int, heads: int, layers: int):
    """CLIP_IMG_ENCODER: (maps after blocks 1, 4, 8 [B, 3, W, g, g], embedding) of [-1, 1] images [B, 3, S, S]."""
    pixels = nearest(images * 0.5 + 0.5, grid * patch)
    pixels = (((pixels + 1) * 0.5).transpose(0, 2, 3, 1) - CLIP_MEAN) / CLIP_STD
    batch = len(images)
    tiles = pixels.reshape(batch, grid, patch, grid, patch, 3)
    patches = np.einsum("bikjlc,ockl->boij", tiles, vit["conv1.weight"])
    tokens, kept = vit_tokens(vit, patches, heads, layers, keep=(1, 4, 8))
    embedding = layer_norm(vit, "ln_post", tokens[:, 0]) @ vit["proj"]
    return np.stack([to_map(t, grid) for t in kept], axis=1), embedding


def d_block(state, prefix: str, x, clip_map=None):
    res = leaky(conv2d(leaky(conv2d(x, state[f"{prefix}.conv_r.0.weight"], padding=1)),
                       state[f"{prefix}.conv_r.2.weight"], padding=1))
    if state[f"{prefix}.conv_s.weight"].shape[0] != state[f"{prefix}.conv_s.weight"].shape[1]:
        x = conv2d(x, state[f"{prefix}.conv_s.weight"], state[f"{prefix}.conv_s.bias"])
    out = x + state[f"{prefix}.gamma"][0] * res
    return out if clip_map is None else out + state[f"{prefix}.beta"][0] * clip_map


def net_d(state, maps) -> np.ndarray:
    out = d_block(state, "DBlocks.0", maps[:, 0], maps[:, 1])
    out = d_block(state, "DBlocks.1", out, maps[:, 2])
    return d_block(state, "main", out)


def net_c(state, features, sentence) -> np.ndarray:
    grid = features.shape[2]
    tiled = np.broadcast_to(sentence[:, :, None, None], sentence.shape + (grid, grid))
    h = leaky(conv2d(np.concatenate([features, tiled], axis=1), state["joint_conv.0.weight"]))
    return conv2d(h, state["joint_conv.2.weight"]).reshape(-1)


def clip_text(state, tokens, heads: int) -> np.ndarray:
    """CLIP_TXT_ENCODER's sentence embedding of token ids [B, 77]."""
    x = state["token_embedding.weight"][tokens] + state["positional_embedding"]
    layers = len({k.split(".")[2] for k in state if k.startswith("transformer.resblocks.")})
    for i in range(layers):
        x = residual_block(state, f"transformer.resblocks.{i}", x, heads, causal=True)
    x = layer_norm(state, "ln_final", x)
    return x[np.arange(len(tokens)), tokens.argmax(-1)] @ state["text_projection"]
