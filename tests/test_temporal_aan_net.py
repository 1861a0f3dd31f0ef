"""Temporal and Feature+Temporal AttendAffectNet networks: the positional
encoding by hand, shapes, causality, and that evaluation never reads labels
(each position is fed the network's own earlier outputs)."""

from __future__ import annotations

import math

import pytest
import torch

from aanbench_plugins.models._temporal_aan_net import (
    FeatureTemporalAANNet,
    TemporalAANNet,
    causal_mask,
    positional_encoding,
)

DIMS = [6, 3, 5]


def test_positional_encoding_by_hand():
    pe = positional_encoding(3, 4)  # w_0 = 1, w_1 = 1 / 10000^(2/4) = 0.01
    assert pe.shape == (3, 4)
    want = [[0.0, 1.0, 0.0, 1.0],
            [math.sin(1), math.cos(1), math.sin(0.01), math.cos(0.01)],
            [math.sin(2), math.cos(2), math.sin(0.02), math.cos(0.02)]]
    assert pe.tolist() == [pytest.approx(row, abs=1e-7) for row in want]
    pe40 = positional_encoding(5, 40)  # the paper's d = 40 (five features x 8)
    k = 7
    assert pe40[4, 2 * k].item() == pytest.approx(math.sin(4 / 10000 ** (2 * k / 40)), abs=1e-7)
    assert pe40[4, 2 * k + 1].item() == pytest.approx(math.cos(4 / 10000 ** (2 * k / 40)), abs=1e-7)


def test_causal_mask():
    assert causal_mask(3).tolist() == [[True, False, False], [True, True, False], [True, True, True]]


def _inputs(n=4, t=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, t, d, generator=g) for d in DIMS], torch.rand(n, t, generator=g) * 2 - 1


@pytest.mark.parametrize("cls", [TemporalAANNet, FeatureTemporalAANNet])
def test_shapes_and_model_size(cls):
    torch.manual_seed(0)
    net = cls(DIMS).eval()
    xs, _ = _inputs()
    assert net(*xs).shape == (4,)
    assert net.sequence_outputs(*xs).shape == (4, 5)
    assert net.decoder.d == 8 * len(DIMS)  # each feature to 8 neurons, concatenated
    five = cls([2048, 1024, 1024, 128, 1582])
    assert five.decoder.d == 40


@pytest.mark.parametrize("cls", [TemporalAANNet, FeatureTemporalAANNet])
def test_a_later_segment_never_changes_an_earlier_prediction(cls):
    torch.manual_seed(1)
    net = cls(DIMS).eval()
    xs, _ = _inputs()
    base = net.sequence_outputs(*xs)
    changed = [x.clone() for x in xs]
    for x in changed:
        x[:, 3:] += 10.0
    out = net.sequence_outputs(*changed)
    assert torch.allclose(out[:, :3], base[:, :3], atol=1e-6)
    assert not torch.allclose(out[:, 3:], base[:, 3:], atol=1e-3)  # the check can fail: later ones do change


@pytest.mark.parametrize("cls", [TemporalAANNet, FeatureTemporalAANNet])
def test_evaluation_never_reads_labels(cls):
    torch.manual_seed(2)
    net = cls(DIMS).eval()
    xs, labels = _inputs()
    plain = net(*xs)
    assert torch.equal(net(*xs, labels), plain)
    assert torch.equal(net(*xs, labels[torch.randperm(4)] * -3), plain)


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cls", [TemporalAANNet, FeatureTemporalAANNet])
def test_training_uses_the_earlier_labels_and_evaluation_its_own_outputs(cls, layers):
    """With dropout off, teacher forcing with the network's own evaluation
    outputs as labels reproduces the evaluation outputs exactly: the
    evaluation loop feeds position t the output of position t-1 (and, with
    more decoder layers, its last layer's query at t sees the same earlier
    layers as the full pass)."""
    torch.manual_seed(3)
    net = cls(DIMS, dropout=0.0, inner_dropout=0.0, layers=layers)
    if isinstance(net, FeatureTemporalAANNet):
        net = cls(DIMS, dropout=0.0, inner_dropout=0.0, feature_dropout=0.0, layers=layers)
    xs, labels = _inputs()
    net.eval()
    own = net.sequence_outputs(*xs).detach()
    net.train()
    forced = net.sequence_outputs(*xs, own)
    assert torch.allclose(forced, own, atol=1e-5)
    other = net.sequence_outputs(*xs, labels)
    assert not torch.allclose(other[:, 1:], own[:, 1:], atol=1e-3)  # labels do matter in training
    assert torch.allclose(other[:, 0], own[:, 0], atol=1e-5)  # position 0 sees only the start value
    # the last label is never an input: it is the target
    shifted = labels.clone()
    shifted[:, -1] = 99.0
    assert torch.allclose(net.sequence_outputs(*xs, shifted), other, atol=1e-6)


def test_wrong_number_of_inputs_is_refused():
    net = TemporalAANNet(DIMS)
    with pytest.raises(ValueError, match="expected 3 feature tensors"):
        net(torch.zeros(2, 5, 6))


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cls", [TemporalAANNet, FeatureTemporalAANNet])
def test_training_forward_on_the_last_position_alone_is_the_full_pass(cls, layers):
    """``forward`` in training mode runs the last layer for the last position
    only: with dropout off its value and the gradients equal those of the
    full teacher-forced pass's last position."""
    torch.manual_seed(4)
    kw = {"feature_dropout": 0.0} if cls is FeatureTemporalAANNet else {}
    net = cls(DIMS, layers=layers, dropout=0.0, inner_dropout=0.0, **kw).train()
    xs, labels = _inputs(n=6)
    full = net.sequence_outputs(*xs, labels)[:, -1]
    g_full = torch.autograd.grad(full.square().sum(), list(net.parameters()))
    last = net(*xs, labels)
    g_last = torch.autograd.grad(last.square().sum(), list(net.parameters()))
    assert last.shape == (6,)
    assert torch.allclose(last, full, atol=1e-6)
    for a, b in zip(g_last, g_full):
        assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(last, net.sequence_outputs(*xs, labels)[:, -2], atol=1e-3)  # not some other position
