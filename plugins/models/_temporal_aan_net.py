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

What the decoder is fed as previous outputs is ``feedback`` (see
:data:`FEEDBACK`):

- ``"teacher"`` (the paper: teacher forcing): training feeds the labels of
  the earlier segments of the window (positions in parallel); in evaluation
  mode the network never reads given previous outputs: it is re-run for
  each position and feeds its own earlier predictions, so no label reaches
  a prediction (and a model trained on true labels is tested on its own,
  noisier outputs: exposure bias);
- ``"none"``: no label feedback, in training and evaluation alike: every
  position's previous output is the constant ``start_value`` (the decoder's
  self-attention stream is then the positional encoding plus a constant),
  so training never reads a label in the decoder input and training and
  test see the same input; all positions run at once;
- ``"scheduled"`` (scheduled sampling, Bengio et al. 2015, in the two-pass
  form for Transformers of Mihaylova and Martins 2019): each training step
  first runs the decoder teacher-forced without gradients (dropout on, as
  the step) for every position's own output, then feeds each position the
  label with probability ``teacher_p`` and the network's own (detached)
  output of the previous position otherwise; ``teacher_p`` falls linearly
  from 1 at the first epoch to 0 after ``anneal_epochs`` (the trainers call
  :meth:`TemporalAANNet.start_epoch`). The coin flips are a
  :class:`FeedbackCoins` module's draws: the global generator when trained
  alone (seeded by the model), a stack copy's own stream in
  :mod:`aanbench.batched`. Evaluation as ``"teacher"``.

The loss is taken on the last position only (the trainer's ``(batch,)``
output), so ``forward`` runs the last decoder layer's queries for that
position alone.

Feature+Temporal AttendAffectNet (``FeatureTemporalAANNet``) first runs
Feature AttendAffectNet's self-attention encoder across the ``K`` feature
vectors inside each segment (``d_model`` = 8 per feature, as the published
Feature AAN), concatenates the ``K`` encoded tokens (``d = 8 K``), then the
same temporal decoder.
"""

from __future__ import annotations

import functools
from typing import Sequence

import torch
from torch import nn

from aanbench_plugins.models._attention import AuthorsLayerNorm, MultiHeadAttention
from aanbench_plugins.models._feature_aan_net import EncoderLayer


FEEDBACK = ("teacher", "none", "scheduled")


def check_feedback(value: object) -> str:
    """``value`` if it is one of :data:`FEEDBACK`, else a clear ``ValueError``."""
    if not isinstance(value, str) or value not in FEEDBACK:
        raise ValueError(f"feedback must be one of {', '.join(repr(f) for f in FEEDBACK)}, not {value!r}")
    return value


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


class FeedbackCoins(nn.Module):
    """Scheduled sampling's coin flips: ``forward(like)`` gives a boolean mask
    of ``like``'s shape, True (feed the label) with probability ``p`` (set per
    epoch). Drawn from torch's global generator, or, where a batched stack
    set ``mask_pool`` (:mod:`aanbench.batched.dropout`), from each copy's own
    stream (the number of values drawn does not depend on ``p``)."""

    def __init__(self) -> None:
        super().__init__()
        self.p = 1.0
        self.mask_pool = None

    def forward(self, like: torch.Tensor) -> torch.Tensor:
        if self.mask_pool is not None:
            return self.mask_pool.keep(like, 1.0 - self.p)
        return torch.rand(like.shape, device=like.device) < self.p


class TemporalDecoder(nn.Module):
    """The decoder over ``(n, T, d)`` segment representations and ``(n, T)``
    previous outputs, giving ``(n, T)`` values."""

    def __init__(self, d: int, heads: int, layers: int, dropout: float, inner_dropout: float, eps: float,
                 start_value: float, feedback: str = "teacher", anneal_epochs: int = 20) -> None:
        super().__init__()
        self.d = d
        self.feedback = check_feedback(feedback)
        self.anneal_epochs = int(anneal_epochs)
        if self.anneal_epochs < 1:
            raise ValueError(f"anneal_epochs must be at least 1, not {anneal_epochs!r}")
        self.coins = FeedbackCoins() if self.feedback == "scheduled" else None
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

    def start_epoch(self, epoch: int) -> None:
        """Scheduled sampling's teacher-forcing probability for training epoch
        ``epoch`` (1-based): ``1 - (epoch - 1) / anneal_epochs``, at least 0."""
        if self.coins is not None:
            self.coins.p = max(0.0, 1.0 - (int(epoch) - 1) / self.anneal_epochs)

    def forward(self, segments: torch.Tensor, labels: torch.Tensor | None = None, last: bool = False) -> torch.Tensor:
        """``feedback = "none"``: every position fed ``start_value``, at once,
        labels never read. Otherwise, training mode with ``labels`` ``(n, T)``:
        teacher forcing (or scheduled sampling), every position at once (with
        ``last``: the last position only, see :meth:`run`); evaluation (or no
        labels): each position in turn, fed the network's own earlier outputs.
        Returns ``(n, T)``, or ``(n, 1)`` with ``last`` where positions run at once."""
        if self.feedback == "none":
            return self.run(segments, self._start(segments[:, :, 0]), last)
        if self.training and labels is not None:
            fed = self.shifted(labels)
            if self.coins is not None:
                with torch.no_grad():  # the network's own outputs, detached (teacher-forced context)
                    own = self.shifted(self.run(segments, fed))
                fed = torch.where(self.coins(fed), fed, own)
            return self.run(segments, fed, last)
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
                 start_value: float = 0.0, feedback: str = "teacher", anneal_epochs: int = 20) -> None:
        super().__init__()
        self.dims = [int(x) for x in dims]
        self.projections = nn.ModuleList(nn.Linear(x, width) for x in self.dims)
        self.decoder = TemporalDecoder(width * len(self.dims), heads, layers, dropout, inner_dropout, eps,
                                       start_value, feedback, anneal_epochs)

    def start_epoch(self, epoch: int) -> None:
        """Called by the trainers before each training epoch (scheduled sampling's annealing)."""
        self.decoder.start_epoch(epoch)

    def stack_key(self) -> tuple:
        """What a batched stack's copies must share beyond parameters and buffers
        (plain attributes, taken from the first copy)."""
        return (self.decoder.feedback, self.decoder.anneal_epochs)

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
                 feature_dropout: float = 0.1, feedback: str = "teacher", anneal_epochs: int = 20) -> None:
        super().__init__(dims, width, heads, layers, dropout, inner_dropout, eps, start_value, feedback,
                         anneal_epochs)
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
