"""Deliberately naive re-derivations of the classification reductions (docs/method.md
§4.4): EViT and ToMe as Expedit-SWAG runs them, one image at a time, float64, explicit
per-head attention and python loops over tokens. Nothing here is shared with
expedite_mm; the transformer layers are re-derived from their weights (mmpretrain's
``TransformerEncoderLayer``: pre-norm, packed q/k/v, exact GELU MLP).
"""
import math

import torch
import torch.nn.functional as F


def embed(model, image):
    """mmpretrain ViT's first-layer input for one image (3, H, W): (L, C), float64."""
    tokens, hw = model.patch_embed(image[None].to(model.cls_token.dtype))
    x = torch.cat([model.cls_token, tokens], dim=1)
    x = x + model.resize_pos_embed(model.pos_embed, model.patch_resolution, hw,
                                   mode=model.interpolate_mode, num_extra_tokens=1)
    return x[0].double()


def layer_norm(x, norm):
    return F.layer_norm(x, x.shape[-1:], norm.weight.double(), norm.bias.double(), norm.eps)


def attention(layer, x, key_size=None):
    """One image (L, C): the attention residual branch, its probabilities (heads, L, L)
    and the keys averaged over heads (L, d), head by head."""
    attn = layer.attn
    L, C = x.shape
    heads = attn.num_heads
    d = C // heads
    h = layer_norm(x, layer.ln1)
    qkv = h @ attn.qkv.weight.double().t() + attn.qkv.bias.double()
    q, k, v = qkv[:, :C], qkv[:, C:2 * C], qkv[:, 2 * C:]
    outs, probs, keys = [], [], []
    for head in range(heads):
        cols = slice(head * d, (head + 1) * d)
        logits = q[:, cols] @ k[:, cols].t() / math.sqrt(d)
        if key_size is not None:
            logits = logits + torch.log(key_size)[None, :]
        p = torch.softmax(logits, dim=-1)
        outs.append(p @ v[:, cols])
        probs.append(p)
        keys.append(k[:, cols])
    out = torch.cat(outs, dim=1) @ attn.proj.weight.double().t() + attn.proj.bias.double()
    return out, torch.stack(probs), torch.stack(keys).mean(0)


def mlp(layer, x):
    fc1, fc2 = layer.ffn.layers[0][0], layer.ffn.layers[1]
    h = layer_norm(x, layer.ln2)
    h = F.gelu(h @ fc1.weight.double().t() + fc1.bias.double())
    return x + h @ fc2.weight.double().t() + fc2.bias.double()


def evit_drop(x, probs, keep_rate, fuse, score="mean_attention"):
    """Expedit-SWAG's EViT step on one image: x (1 + n, C) after the attention residual."""
    n = x.shape[0] - 1
    keep = math.ceil(keep_rate * n)
    if keep >= n:
        return x
    heads, L, _ = probs.shape
    scores = []
    for j in range(n):
        if score == "mean_attention":   # every query's attention to token j, heads averaged
            scores.append(sum(float(probs[h, q, 1 + j]) for h in range(heads) for q in range(L))
                          / (heads * L))
        else:                           # the class token's
            scores.append(sum(float(probs[h, 0, 1 + j]) for h in range(heads)) / heads)
    order = sorted(range(n), key=lambda j: -scores[j])
    kept, dropped = sorted(order[:keep]), order[keep:]
    rows = [x[0]] + [x[1 + j] for j in kept]
    if fuse:
        rows.append(sum(scores[j] * x[1 + j] for j in dropped))
    return torch.stack(rows)


def tome_merge(x, keys, size, r):
    """ToMe's step on one image: x (n, C) with the class token first, keys (n, d), size (n,)."""
    n = x.shape[0]
    r = min(r, (n - 1) // 2)
    if r <= 0:
        return x, size
    a_rows, b_rows = list(range(0, n, 2)), list(range(1, n, 2))
    unit = keys / keys.norm(dim=-1, keepdim=True)
    best, match = [], []
    for a in a_rows:
        sims = [float(unit[a] @ unit[b]) for b in b_rows]
        j = max(range(len(b_rows)), key=lambda i: (sims[i], -i))   # first maximum
        best.append(-math.inf if a == 0 else sims[j])
        match.append(j)
    order = sorted(range(len(a_rows)), key=lambda i: -best[i])
    merged, kept = order[:r], sorted(order[r:])
    total = [size[b] * x[b] for b in b_rows]
    mass = [size[b].clone() for b in b_rows]
    for i in merged:
        a = a_rows[i]
        total[match[i]] = total[match[i]] + size[a] * x[a]
        mass[match[i]] = mass[match[i]] + size[a]
    rows = [x[a_rows[i]] for i in kept] + [t / m for t, m in zip(total, mass)]
    sizes = [size[a_rows[i]] for i in kept] + mass
    return torch.stack(rows), torch.stack(sizes)


def classify_evit(model, image, keep_rate, layers, fuse, score="mean_attention"):
    """The class token after the final norm, EViT dropping inside ``layers`` (1-based)."""
    x = embed(model, image)
    for number, layer in enumerate(model.layers, start=1):
        out, probs, _ = attention(layer, x)
        x = x + out
        if number in layers:
            x = evit_drop(x, probs, keep_rate, fuse, score)
        x = mlp(layer, x)
    return layer_norm(x, model.ln1)[0]


def classify_tome(model, image, r, proportional=True):
    """The class token after the final norm, ToMe merging r tokens in every layer."""
    x = embed(model, image)
    size = torch.ones(x.shape[0], dtype=torch.float64)
    for layer in model.layers:
        out, _, keys = attention(layer, x, size if proportional else None)
        x = x + out
        x, size = tome_merge(x, keys, size, r)
        x = mlp(layer, x)
    return layer_norm(x, model.ln1)[0]
