"""The stack-aware attention the AttendAffectNet networks share
(:mod:`aanbench_plugins.models._feature_aan_net`,
:mod:`aanbench_plugins.models._temporal_aan_net`): multi-head attention that
computes for one fit or for a stack of copies (the batched trainer,
:mod:`aanbench.batched`, sets its ``stacked`` / ``folded`` flags), the
attention laid out for a folded stack (:func:`stacked_attention`), the
authors' layer norm and the softmax written out for a stack's tensors.
Imported when a network is built (imports torch)."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn


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
    # dropout sees the samples (the copies, copy-major) on the first axis, as everywhere else in a
    # folded stack: each copy's masks come from its own stream (aanbench.batched.dropout); a view
    attn = dropout((e / e.sum(1, keepdim=True)).movedim(-1, 0)).movedim(0, -1)
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


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention with ``heads`` heads and an optional
    boolean mask (True = may attend): Feature AttendAffectNet's self-attention
    across feature tokens and the temporal decoder's self- and cross-attention.
    Stack-aware: ``stacked`` and ``folded`` are set by the batched trainer
    (:mod:`aanbench.batched`; the protocols ``StackAware`` / ``FoldAware``)."""

    stacked = False  # see softmax_last
    folded = False  # see stacked_attention

    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        if d % heads:
            raise ValueError(f"model size {d} is not divisible by heads {heads}")
        self.heads, self.d_k = heads, d // heads
        self.q, self.k, self.v, self.out = (nn.Linear(d, d) for _ in range(4))
        self.dropout = nn.Dropout(dropout)

    def forward(self, query: torch.Tensor, memory: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """``query`` ``(b, tq, d)`` attends to ``memory`` ``(b, tk, d)``, or to
        itself when ``memory`` is None (self-attention: in a folded stack the
        three maps are then one product) -> ``(b, tq, d)``."""
        if self.folded:
            if memory is None:
                qkv = side_by_side(query, (self.q, self.k, self.v))
                return self.out(stacked_attention(qkv, None, None, self.heads, self.dropout, mask))
            kv = side_by_side(memory, (self.k, self.v))
            return self.out(stacked_attention(self.q(query), kv, None, self.heads, self.dropout, mask))
        if memory is None:
            memory = query
        b, tq, _ = query.shape
        tk = memory.shape[1]
        q = self.q(query).view(b, tq, self.heads, self.d_k).transpose(1, 2)
        k = self.k(memory).view(b, tk, self.heads, self.d_k).transpose(1, 2)
        v = self.v(memory).view(b, tk, self.heads, self.d_k).transpose(1, 2)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_k)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        attn = self.dropout(softmax_last(scores, self.stacked))
        return self.out((attn @ v).transpose(1, 2).reshape(b, tq, self.heads * self.d_k))

    def stream_attention(self, stream: torch.Tensor, pe: torch.Tensor, tq: int,
                         mask: torch.Tensor | None = None) -> torch.Tensor:
        """Self-attention over ``x[n, t] = stream[n, t] + pe[t]`` (the scalar
        ``stream`` repeated over all ``d`` dimensions: the decoder's first
        input, see :meth:`TemporalDecoder.run`) for the last ``tq`` positions'
        queries, in a folded stack (``folded``: ``(K, d, d)`` weights, the
        copies folded into the batch, copy-major) -> ``(n, tq, d)``.

        The same attention as ``forward(x[:, -tq:], x, mask)``, computed from
        the stream's structure: each map of ``x`` is ``stream[n, t] a + c[t]``
        (``a = W 1``, ``c[t] = W pe[t] + b``), so each head's score is
        ``s_i s_j A + s_i B_j + s_j C_i + D_ij`` (``s``: the stream) with
        per-copy constants of the weights and the positional encoding, and
        the values' weighted sum is ``(sum_j attn_ij s_j) a_v + sum_j attn_ij c_v[j]``.
        No ``(n, t, d)`` tensor and no ``(n, t, 3d)`` product is made: on the
        stack's 24 copies x 30 windows of 5 this self-attention, forward and
        backward, takes 1.65 ms against the general one's 2.9 ms (measured,
        one CPU thread). Only a folded stack takes this path: on one fit's 30
        windows its extra operations cost more than they save (0.90 ms against
        0.58 ms, measured)."""
        w = torch.cat([self.q.weight, self.k.weight, self.v.weight], -2)  # (K, 3d, d)
        b = torch.cat([self.q.bias, self.k.bias, self.v.bias], -1)  # (K, 3d)
        k, n, tk = w.shape[0], stream.shape[0], stream.shape[1]
        h, dk = self.heads, self.d_k
        per = n // k  # samples of each copy
        # one product gives both: rows pe[t] -> W pe[t], a row of ones -> W 1
        rows = torch.cat([pe.to(w.dtype), torch.ones(1, pe.shape[-1], dtype=w.dtype, device=w.device)])
        maps = nn.functional.linear(rows, w.reshape(-1, w.shape[-1]))  # (tk + 1, K 3d): one product for all copies
        a_q, a_k, a_v = maps[tk].view(k, 3, h, dk).unbind(1)  # (K, h, dk) each
        c_q, c_k, c_v = (maps[:tk].view(tk, k, -1).transpose(0, 1) + b[:, None]).reshape(k, tk, 3, h, dk).unbind(2)
        c_q = c_q[:, tk - tq:]
        scale = 1.0 / math.sqrt(dk)
        # the score's constants, keys last: (K, h), (K, h, tk), (K, tq, h), (K, tq, h, tk)
        big_a = (a_q * a_k).sum(-1) * scale
        big_b = (c_k * a_q[:, None]).sum(-1).transpose(1, 2) * scale
        big_c = (c_q * a_k[:, None]).sum(-1) * scale
        big_d = (c_q[:, :, None] * c_k[:, None]).sum(-1).transpose(2, 3) * scale
        s = stream.reshape(k, per, 1, 1, tk)
        sq = stream[:, tk - tq:].reshape(k, per, tq, 1, 1)
        scores = (sq * (s * big_a[:, None, None, :, None] + big_b[:, None, None])
                  + s * big_c[:, None, :, :, None] + big_d[:, None])  # (K, per, tq, h, tk)
        if mask is not None:
            scores = scores.masked_fill(~mask[tk - tq:, None, :], float("-inf"))
        attn = self.dropout(softmax_last(scores, self.stacked))
        u = (attn * s).sum(-1)  # (K, per, tq, h)
        # sum_j attn_ij c_v[j]: one product per copy and head
        wv = torch.bmm(attn.permute(0, 3, 1, 2, 4).reshape(k * h, per * tq, tk),
                       c_v.permute(0, 2, 1, 3).reshape(k * h, tk, dk))
        out = u[..., None] * a_v[:, None, None] + wv.view(k, h, per, tq, dk).permute(0, 2, 3, 1, 4)
        return self.out(out.reshape(n, tq, h * dk))
