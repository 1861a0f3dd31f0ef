"""Torch part of Temporal AttendAffectNet and Feature+Temporal (Mixed)
AttendAffectNet (paper section III-C-c and III-C-d): the networks. Imported
when a model is built, trained or restored.

Both read a window of ``T`` consecutive segments, each with ``K`` feature
vectors, and give one value (valence or arousal) per window: the value of
its last segment (sequence to one).

Temporal AttendAffectNet (``TemporalAANNet``), as the paper describes it:

- each segment's ``K`` feature vectors are each mapped by a fully connected
  layer of ``width`` (8) neurons and concatenated: ``d = 8 K`` (40 for the
  five paper features);
- a sinusoidal positional encoding of size ``d`` is added
  (:func:`positional_encoding`, the paper's formula 2, ``w_k = 1 / 10000^(2k/d)``);
- the previous outputs are the decoder's other input: each previous scalar
  output is repeated to a ``d``-vector and the same positional encoding is
  added;
- a Transformer decoder with two heads whose feed-forward sub-layer is one
  linear transformation; dropout on its outputs, then a fully connected
  layer with one neuron gives one value per position.

Choices the paper leaves open (each a constructor parameter):

- the previous-outputs stream is the decoder's self-attention input (as the
  shifted outputs in the original Transformer) and the segment features its
  memory (the cross-attention keys and values);
- the "previous output" of the first position is ``start_value`` (0.0 here;
  the model plugin, :mod:`aanbench_plugins.models.temporal_aan`, passes the
  mean label of the fitting samples, inside any dataset's label range);
- ``layers`` decoder layers (default 1); post-norm residual blocks as in
  the original Transformer (a pre-norm block would erase the previous
  outputs, see :class:`DecoderLayer`), with the authors' layer norm;
  ``inner_dropout`` (0.1) inside the blocks, ``dropout`` (the paper's 0.5)
  on the decoder's outputs;
- every attention is causal: position ``t`` sees previous outputs and
  segment features at positions ``<= t`` only, so a later segment never
  changes the prediction for an earlier one.

Training feeds the labels of the earlier segments of the window as previous
outputs (teacher forcing, positions in parallel); the loss is taken on the
last position only (the trainer's ``(batch,)`` output), so ``forward`` runs
the last decoder layer's queries for that position alone. In evaluation mode
the network never reads given previous outputs: it is re-run for each
position and feeds its own earlier predictions, so no label reaches a
prediction.

Feature+Temporal AttendAffectNet (``FeatureTemporalAANNet``) first runs
Feature AttendAffectNet's self-attention encoder across the ``K`` feature
vectors inside each segment (``d_model`` = 8 per feature, as the published
Feature AAN), concatenates the ``K`` encoded tokens (``d = 8 K``), then the
same temporal decoder.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import torch
from torch import nn

from aanbench_plugins.models._feature_aan_net import (
    AuthorsLayerNorm,
    EncoderLayer,
    side_by_side,
    softmax_last,
    stacked_attention,
)


def positional_encoding(length: int, d: int) -> torch.Tensor:
    """``(length, d)``: ``PE[p, 2k] = sin(p w_k)``, ``PE[p, 2k+1] = cos(p w_k)``,
    ``w_k = 1 / 10000^(2k / d)`` (paper formula 2)."""
    pos = torch.arange(length, dtype=torch.float64)[:, None]
    k = torch.arange(0, d, 2, dtype=torch.float64)
    w = 1.0 / (10000.0 ** (k / d))
    pe = torch.zeros(length, d, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(pos * w)
    pe[:, 1::2] = torch.cos(pos * w)[:, : d // 2]
    return pe.float()


def causal_mask(t: int, device: torch.device | None = None) -> torch.Tensor:
    """``(t, t)`` boolean, True where position ``i`` may attend to ``j`` (``j <= i``)."""
    return torch.ones(t, t, dtype=torch.bool, device=device).tril()


@functools.lru_cache(maxsize=64)
def _constants(t: int, d: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The positional encoding and causal mask of a window (made once per size;
    never written to)."""
    return positional_encoding(t, d).to(device), causal_mask(t, device)


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention with ``heads`` heads and an optional
    boolean mask (True = may attend)."""

    stacked = False  # see softmax_last
    folded = False  # see stacked_attention

    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        if d % heads:
            raise ValueError(f"model size {d} is not divisible by heads {heads}")
        self.heads, self.d_k = heads, d // heads
        self.q, self.k, self.v, self.out = (nn.Linear(d, d) for _ in range(4))
        self.dropout = nn.Dropout(dropout)

    def forward(self, query: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.folded:
            kv = side_by_side(memory, (self.k, self.v))
            return self.out(stacked_attention(self.q(query), kv, None, self.heads, self.dropout, mask))
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


class DecoderLayer(nn.Module):
    """Post-norm, as the original Transformer decoder:
    ``x = norm(x + drop(self_attn(x)))``, ``x = norm(x + drop(cross_attn(x, memory)))``,
    ``x = norm(x + drop(linear(x)))`` (the feed-forward is one linear map).

    Not pre-norm: the previous outputs enter as a scalar repeated over all
    ``d`` dimensions, which a layer norm's mean subtraction removes
    entirely; a pre-norm block would never see them (measured: teacher
    forcing with any labels gave the same outputs)."""

    def __init__(self, d: int, heads: int, dropout: float, eps: float) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(d, heads, dropout)
        self.cross_attn = MultiHeadAttention(d, heads, dropout)
        self.ff = nn.Linear(d, d)
        self.norm1, self.norm2, self.norm3 = (AuthorsLayerNorm(d, eps) for _ in range(3))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor | None,
                context: torch.Tensor | None = None) -> torch.Tensor:
        """``context``: the self-attention's keys and values when ``x`` holds only
        some query positions (the last one, see :meth:`TemporalDecoder.run`)."""
        x = self.norm1(x + self.drop(self.self_attn(x, x if context is None else context, mask)))
        x = self.norm2(x + self.drop(self.cross_attn(x, memory, mask)))
        return self.norm3(x + self.drop(self.ff(x)))

    def from_stream(self, stream: torch.Tensor, pe: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor | None,
                    last: bool) -> torch.Tensor:
        """``forward`` on ``x[n, t] = stream[n, t] + pe[t]`` (the decoder's first
        layer, see :meth:`TemporalDecoder.run`) in a folded stack, its self-
        attention from the stream (:meth:`MultiHeadAttention.stream_attention`);
        with ``last`` only the last position's queries (``mask`` not used)."""
        tq = 1 if last else stream.shape[1]
        mask = None if last else mask
        x = stream[:, -tq:, None] + pe[-tq:]
        x = self.norm1(x + self.drop(self.self_attn.stream_attention(stream, pe, tq, mask)))
        x = self.norm2(x + self.drop(self.cross_attn(x, memory, mask)))
        return self.norm3(x + self.drop(self.ff(x)))


class TemporalDecoder(nn.Module):
    """The decoder over ``(n, T, d)`` segment representations and ``(n, T)``
    previous outputs, giving ``(n, T)`` values."""

    def __init__(self, d: int, heads: int, layers: int, dropout: float, inner_dropout: float, eps: float,
                 start_value: float) -> None:
        super().__init__()
        self.d = d
        self.start_value = float(start_value)
        # the same value as a (non-persistent) buffer: what the computation reads, so that
        # aanbench.batched can stack copies whose start values differ
        self.register_buffer("start", torch.tensor(self.start_value, dtype=torch.float32), persistent=False)
        self.layers = nn.ModuleList(DecoderLayer(d, heads, inner_dropout, eps) for _ in range(layers))
        self.out_dropout = nn.Dropout(dropout)
        self.head = nn.Linear(d, 1)

    def shifted(self, labels: torch.Tensor) -> torch.Tensor:
        """``(n, T)`` labels of the window's segments -> the previous outputs
        each position sees: ``start_value``, then labels ``0 .. T-2``."""
        return torch.cat([self._start(labels[:, :1]), labels[:, :-1]], dim=1)

    def _start(self, like: torch.Tensor) -> torch.Tensor:
        """``start_value`` in the shape, dtype and device of ``like`` ``(n, t)``. A
        stack of ``K`` copies folded into the batch (:mod:`aanbench.batched`)
        holds ``(K,)`` start values, one per copy, copy-major over the ``n`` rows."""
        start = self.start.to(device=like.device, dtype=like.dtype)
        if start.dim() == 1:
            start = start.repeat_interleave(like.shape[0] // start.shape[0])[:, None]
        return start.expand_as(like)

    def run(self, segments: torch.Tensor, previous: torch.Tensor, last: bool = False) -> torch.Tensor:
        """``(n, T)`` values, or with ``last`` ``(n, 1)``: the last position's only.
        Every attention is causal, so the last position's value is the same
        either way; with ``last`` the final layer runs its queries, feed-forward
        and head for that position alone (its keys and values still cover
        every position), a fifth of the tokens at ``T = 5``."""
        n, t, d = segments.shape
        pe, mask = _constants(t, d, segments.device)
        memory = segments + pe
        structured = self.layers[0].self_attn.folded  # a folded stack: the first input's structure used
        x = None if structured else previous[..., None].expand(n, t, d) + pe
        for i, layer in enumerate(self.layers):
            final = last and i == len(self.layers) - 1
            if i == 0 and structured:
                x = layer.from_stream(previous, pe, memory, mask, final)
            elif final:
                x = layer(x[:, -1:], memory, None, context=x)  # the last row of the mask is all True
            else:
                x = layer(x, memory, mask)
        return self.head(self.out_dropout(x)).squeeze(-1)

    def forward(self, segments: torch.Tensor, labels: torch.Tensor | None = None, last: bool = False) -> torch.Tensor:
        """Training mode with ``labels`` ``(n, T)``: teacher forcing, every
        position at once (with ``last``: the last position only, see :meth:`run`).
        Otherwise (evaluation, or no labels): each position in turn, fed the
        network's own earlier outputs. Returns ``(n, T)``, or ``(n, 1)`` in
        training mode with ``last``."""
        if self.training and labels is not None:
            return self.run(segments, self.shifted(labels), last)
        n, t, _ = segments.shape
        previous = self._start(segments[:, :, 0]).clone()
        outs = []
        for pos in range(t):
            # every attention is causal: position pos's value needs the positions <= pos only, and the
            # last layer only its own query
            value = self.run(segments[:, : pos + 1], previous[:, : pos + 1], last=True)[:, -1]
            outs.append(value)
            if pos + 1 < t:
                previous = previous.clone()
                previous[:, pos + 1] = value
        return torch.stack(outs, dim=1)


def _split(features: Sequence[torch.Tensor], k: int) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    if len(features) == k:
        return list(features), None
    if len(features) == k + 1:
        return list(features[:k]), features[k]
    raise ValueError(f"expected {k} feature tensors (and optionally the window's labels), got {len(features)}")


class TemporalAANNet(nn.Module):
    """``forward(x_1, ..., x_K[, labels])`` with ``x_k`` ``(n, T, dim_k)`` and
    optional ``labels`` ``(n, T)`` (used only in training mode) -> ``(n,)``,
    the last position's value. ``sequence_outputs`` gives all ``(n, T)``."""

    stack_fold = True  # see FeatureAANNet.stack_fold (and TemporalDecoder._start)

    def __init__(self, dims: Sequence[int], width: int = 8, heads: int = 2, layers: int = 1,
                 dropout: float = 0.5, inner_dropout: float = 0.1, eps: float = 1e-6,
                 start_value: float = 0.0) -> None:
        super().__init__()
        self.dims = [int(x) for x in dims]
        self.projections = nn.ModuleList(nn.Linear(x, width) for x in self.dims)
        self.decoder = TemporalDecoder(width * len(self.dims), heads, layers, dropout, inner_dropout, eps,
                                       start_value)

    def segments(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.join([p(x) for p, x in zip(self.projections, xs)])

    def join(self, projected: Sequence[torch.Tensor]) -> torch.Tensor:
        """The ``K`` projected features ``(n, T, width)`` -> segment representations ``(n, T, d)``."""
        return torch.cat(list(projected), dim=-1)

    def sequence_outputs(self, *features: torch.Tensor) -> torch.Tensor:
        xs, labels = _split(features, len(self.dims))
        return self.decoder(self.segments(xs), labels)

    def forward(self, *features: torch.Tensor) -> torch.Tensor:
        xs, labels = _split(features, len(self.dims))
        return self.decoder(self.segments(xs), labels, last=True)[:, -1]

    def from_projections(self, *projected: torch.Tensor) -> torch.Tensor:
        """``forward`` after the first layer: the ``K`` features already through
        ``projections`` (``(n, T, width)`` each), then the optional labels
        (:mod:`aanbench.batched` computes the projections itself)."""
        xs, labels = _split(projected, len(self.dims))
        return self.decoder(self.join(xs), labels, last=True)[:, -1]


class FeatureTemporalAANNet(TemporalAANNet):
    """Feature AttendAffectNet's encoder across the ``K`` feature vectors of
    each segment (tokens of ``width`` = 8), the ``K`` encoded tokens
    concatenated, then the temporal decoder."""

    def __init__(self, dims: Sequence[int], width: int = 8, heads: int = 2, layers: int = 1,
                 dropout: float = 0.5, inner_dropout: float = 0.1, eps: float = 1e-6,
                 start_value: float = 0.0, feature_layers: int = 6, feature_heads: int = 2,
                 feature_dropout: float = 0.1) -> None:
        super().__init__(dims, width, heads, layers, dropout, inner_dropout, eps, start_value)
        self.encoder = nn.ModuleList(EncoderLayer(width, feature_heads, feature_dropout, eps, "relu")
                                     for _ in range(feature_layers))
        self.encoder_norm = AuthorsLayerNorm(width, eps)

    def join(self, projected: Sequence[torch.Tensor]) -> torch.Tensor:
        n, t = projected[0].shape[:2]
        tokens = torch.stack(list(projected), dim=2)  # (n, T, K, width)
        tokens = tokens.reshape(n * t, len(self.dims), -1)
        for layer in self.encoder:
            tokens = layer(tokens)
        return self.encoder_norm(tokens).reshape(n, t, -1)
