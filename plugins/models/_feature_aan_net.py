"""Torch part of Feature AttendAffectNet (:mod:`aanbench_plugins.models.feature_aan`):
the network. Imported when a model is built, trained or restored; see that
module for the details."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from aanbench_plugins.models.feature_aan import FEED_FORWARDS


def softmax_last(x: torch.Tensor, stacked: bool = False) -> torch.Tensor:
    """``x.softmax(-1)``; for a stack of copies (``stacked``, see
    :mod:`aanbench.batched`) written out (the shift by the row maximum is a
    constant: no gradient flows through it, as through softmax's): on the
    stack's 24x larger tensors torch's softmax over a last axis of 5
    positions costs about 4x as much on the CPU, while on one fit's tensors
    the written-out form's extra operations cost more than they save
    (measured)."""
    if not stacked:
        return x.softmax(dim=-1)
    e = (x - x.amax(-1, keepdim=True).detach()).exp()
    return e / e.sum(-1, keepdim=True)


def side_by_side(x: torch.Tensor, linears: Sequence[nn.Module]) -> torch.Tensor:
    """``cat([lin(x) for lin in linears], -1)`` as one product: the linear maps'
    weights stacked (``nn.Linear``'s ``(out, in)``, or a folded stack's
    ``(K, out, in)``, see :mod:`aanbench.batched`)."""
    w = torch.cat([lin.weight for lin in linears], -2)
    b = torch.cat([lin.bias for lin in linears], -1)
    if w.dim() == 2:
        return nn.functional.linear(x, w, b)
    shape = x.shape
    y = torch.baddbmm(b[:, None, :], x.reshape(w.shape[0], -1, shape[-1]), w.transpose(1, 2))
    return y.reshape(*shape[:-1], w.shape[1])


def stacked_attention(q: torch.Tensor, k: torch.Tensor | None, v: torch.Tensor | None, heads: int,
                      dropout: nn.Module, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-head scaled dot-product attention for a stack of copies folded
    into the batch (``folded``, set by :mod:`aanbench.batched` in its
    stack's template when it runs the copies without ``vmap``): ``q``
    ``(n, tq, d)``, ``k`` and ``v`` ``(n, tk, d)``, already through their
    linear maps, ``d = heads * d_k``; ``mask``
    ``(tq, tk)`` boolean (True = may attend) or None -> ``(n, tq, d)``, the
    heads side by side (what the output map reads).

    The same arithmetic as ``softmax(q k^T / sqrt(d_k)) v`` per head, laid out
    with the samples innermost, ``(t, heads, d_k, n)``, and written as
    broadcast products and sums over the short axes: a batched matrix
    product over ``n * heads`` matrices of 5 x d_k costs more per matrix
    than the whole product (measured on 24 copies x 30 samples folded,
    forward and backward: 2.0 -> 0.8 ms at d_k = 4; 9.2 -> 3.0 ms at
    d_k = 20 with a causal mask, where the scores are summed one key
    position at a time, 1.5x faster than all at once). Under ``vmap`` the
    copies stay the outer axis and only a copy's samples are innermost:
    slower than the matrix products there (measured).

    Maps computed side by side (:func:`side_by_side`) come in packed: ``k``
    None and ``q`` ``(n, t, 3d)`` = queries, keys and values (self-attention);
    ``v`` None and ``k`` ``(n, tk, 2d)`` = keys and values. One layout change
    then serves them all. One query position (``tq = 1``) goes to
    :func:`_one_query_attention`, in the given layout."""

    if k is not None and q.shape[1] == 1:
        return _one_query_attention(q, k, v, heads, dropout, mask)

    def inner(x: torch.Tensor, parts: int) -> tuple[torch.Tensor, ...]:
        n, t, width = x.shape
        d_k = width // parts // heads
        return x.permute(1, 2, 0).reshape(t, parts, heads, d_k, n).contiguous().unbind(1)

    if k is None:
        qi, ki, vi = inner(q, 3)
    else:
        (qi,) = inner(q, 1)
        ki, vi = inner(k, 2) if v is None else (inner(k, 1)[0], inner(v, 1)[0])
    tq, _, d_k, n = qi.shape
    tk = ki.shape[0]
    d = heads * d_k
    if d_k <= 8:
        scores = (qi[:, None] * ki[None]).sum(3) / math.sqrt(d_k)  # (tq, tk, heads, n)
    else:  # one key position at a time: (tq, heads, d_k, n) products that stay in cache
        # (unbind, not indexing: the backward of each index would fill a whole zero tensor)
        kj, vj = ki.unbind(0), vi.unbind(0)
        scores = torch.stack([(qi * kj[j]).sum(2) for j in range(tk)], 1) / math.sqrt(d_k)
    if mask is not None:
        scores = scores.masked_fill(~mask[:, :, None, None], float("-inf"))
    e = (scores - scores.amax(1, keepdim=True).detach()).exp()
    attn = dropout(e / e.sum(1, keepdim=True))
    if d_k <= 8:
        out = (attn[:, :, :, None] * vi[None]).sum(1)  # (tq, heads, d_k, n)
    else:
        aj = attn.unbind(1)
        out = aj[0][:, :, None] * vj[0]
        for j in range(1, tk):
            out = out + aj[j][:, :, None] * vj[j]
    return out.reshape(tq, d, n).permute(2, 0, 1)


def _one_query_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor | None, heads: int, dropout: nn.Module,
                         mask: torch.Tensor | None) -> torch.Tensor:
    """:func:`stacked_attention` for one query position (the temporal
    decoder's last position in training): with ``tq = 1`` the products over
    the short axes are as cheap in the given ``(n, t, d)`` layout, and the
    two layout changes (forward and backward) of the samples-innermost form
    cost more than the whole attention (measured)."""
    n, tk = k.shape[:2]
    d = q.shape[2]
    d_k = d // heads
    if v is None:  # keys and values side by side
        k4, v4 = k.reshape(n, tk, 2, heads, d_k).unbind(2)  # (not indexing: see stacked_attention)
    else:
        k4, v4 = k.reshape(n, tk, heads, d_k), v.reshape(n, tk, heads, d_k)
    scores = (q.reshape(n, 1, heads, d_k) * k4).sum(-1) / math.sqrt(d_k)  # (n, tk, heads)
    if mask is not None:
        scores = scores.masked_fill(~mask[0][None, :, None], float("-inf"))
    e = (scores - scores.amax(1, keepdim=True).detach()).exp()
    attn = dropout(e / e.sum(1, keepdim=True))
    return (attn[..., None] * v4).sum(1).reshape(n, 1, d)


class AuthorsLayerNorm(nn.Module):
    """``a * (x - mean) / (std + eps) + b`` with the unbiased std (as the authors).
    ``stacked`` (set by :mod:`aanbench.batched` in its stack's template): the
    std written out, which on the stack's tensors costs a fifth of torch's
    std over 8 values (measured; on one fit's tensors the extra operations
    cost more); with ``(K, size)`` parameters (the copies folded into the
    batch, copy-major) each copy's own."""

    stacked = False

    def __init__(self, size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.bias = nn.Parameter(torch.zeros(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.stacked:
            mean = x.mean(-1, keepdim=True)
            std = x.std(-1, keepdim=True)
            return self.weight * (x - mean) / (std + self.eps) + self.bias
        w, b, shape = self.weight, self.bias, x.shape
        if w.dim() == 2:  # a stack's K copies folded into the batch: (K, size) parameters
            x = x.reshape(w.shape[0], -1, shape[-1])
            w, b = w[:, None, :], b[:, None, :]
        d = x - x.mean(-1, keepdim=True)
        std = (d.square().sum(-1, keepdim=True) / (x.shape[-1] - 1)).sqrt()
        return (w * d / (std + self.eps) + b).reshape(shape)


class MultiHeadSelfAttention(nn.Module):
    stacked = False  # see softmax_last
    folded = False  # see stacked_attention

    def __init__(self, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model {d_model} is not divisible by heads {heads}")
        self.heads = heads
        self.d_k = d_model // heads
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.folded:
            qkv = side_by_side(x, (self.q, self.k, self.v))
            return self.out(stacked_attention(qkv, None, None, self.heads, self.dropout))
        b, t, _ = x.shape
        q = self.q(x).view(b, t, self.heads, self.d_k).transpose(1, 2)
        k = self.k(x).view(b, t, self.heads, self.d_k).transpose(1, 2)
        v = self.v(x).view(b, t, self.heads, self.d_k).transpose(1, 2)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_k)
        attn = self.dropout(softmax_last(scores, self.stacked))
        y = (attn @ v).transpose(1, 2).reshape(b, t, self.heads * self.d_k)
        return self.out(y)


class EncoderLayer(nn.Module):
    """Pre-norm block: ``x + drop(attn(norm(x)))`` then ``x + drop(ff(norm(x)))``;
    the feed-forward ``ff(h)`` is one linear layer ``w``: ``drop(relu(w(h)))``
    for ``feed_forward="relu"``, ``w(drop(h + tanh(h)))`` for ``"tanh_skip"``
    (both as the authors)."""

    def __init__(self, d_model: int, heads: int, dropout: float, eps: float, feed_forward: str = "relu") -> None:
        super().__init__()
        if feed_forward not in FEED_FORWARDS:
            raise ValueError(f"feed_forward must be one of {FEED_FORWARDS}, not {feed_forward!r}")
        self.feed_forward = feed_forward
        self.attn = MultiHeadSelfAttention(d_model, heads, dropout)
        self.ff = nn.Linear(d_model, d_model)
        self.ff_dropout = nn.Dropout(dropout)
        self.norm1 = AuthorsLayerNorm(d_model, eps)
        self.norm2 = AuthorsLayerNorm(d_model, eps)
        self.drop1 = nn.Dropout(dropout)
        self.drop2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop1(self.attn(self.norm1(x)))
        h = self.norm2(x)
        if self.feed_forward == "relu":
            h = self.ff_dropout(torch.relu(self.ff(h)))
        else:
            h = self.ff(self.ff_dropout(h + torch.tanh(h)))
        return x + self.drop2(h)


class FeatureAANNet(nn.Module):
    """``forward(*features)``: each ``(batch, dim_k)`` -> ``(batch,)``."""

    # aanbench.batched may fold a stack's copies into the batch: every parameterised module is an
    # nn.Linear or an AuthorsLayerNorm, samples never mix, attention knows ``folded``
    stack_fold = True

    def __init__(
        self,
        dims: Sequence[int],
        d_model: int = 8,
        heads: int = 2,
        layers: int = 6,
        dropout: float = 0.1,
        head_dropout: float = 0.1,
        eps: float = 1e-6,
        head_activation: str = "none",
        feed_forward: str = "relu",
    ) -> None:
        super().__init__()
        if head_activation not in ("none", "tanh"):
            raise ValueError(f"head_activation must be 'none' or 'tanh', not {head_activation!r}")
        self.dims = list(dims)
        self.projections = nn.ModuleList(nn.Linear(d, d_model) for d in dims)
        self.layers = nn.ModuleList(
            EncoderLayer(d_model, heads, dropout, eps, feed_forward) for _ in range(layers))
        self.norm = AuthorsLayerNorm(d_model, eps)
        self.head_dropout = nn.Dropout(head_dropout)
        self.head = nn.Linear(d_model, 1)
        self.head_activation = head_activation

    def forward(self, *features: torch.Tensor) -> torch.Tensor:
        if len(features) != len(self.projections):
            raise ValueError(f"expected {len(self.projections)} feature tensors, got {len(features)}")
        return self.from_projections(*[proj(f) for proj, f in zip(self.projections, features)])

    def from_projections(self, *projected: torch.Tensor) -> torch.Tensor:
        """``forward`` after the first layer: each feature already through its
        projection, ``(batch, d_model)`` (:mod:`aanbench.batched` computes the
        projections itself)."""
        tokens = torch.stack(list(projected), dim=1)
        for layer in self.layers:
            tokens = layer(tokens)
        pooled = self.norm(tokens).mean(dim=1)
        if self.head_activation == "tanh":
            pooled = torch.tanh(pooled)
        return self.head(self.head_dropout(pooled)).squeeze(-1)
