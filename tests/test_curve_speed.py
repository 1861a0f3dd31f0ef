"""What `curve` does to be fast (issue 27 item 8) changes no feature value.

* emobase2010 runs openSMILE through :class:`SmileRunner` (one instance,
  reset between signals) instead of ``opensmile.Smile.process_signal`` (a
  new instance per signal): the frames are compared bit for bit with
  ``process_signal``'s on a sequence of different signals, in the order a
  worker meets them (speech-like, silence, noise, short, too short).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from aanbench_plugins.extractors.emobase2010 import CONFIG, RATE, Emobase2010, SmileRunner

SR = RATE


def _signals() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    t = np.arange(2 * SR) / SR
    voice = (0.3 * np.sin(2 * np.pi * (140 + 30 * np.sin(2 * np.pi * 0.7 * t)) * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)))
    chord = sum(0.1 * np.sin(2 * np.pi * f * t) for f in (220.0, 277.0, 330.0)) + 0.03 * rng.standard_normal(t.size)
    full = np.sign(np.sin(2 * np.pi * 100 * t[:SR]))  # full scale (clipped below as the extractor does)
    out = [voice, np.zeros(SR + SR // 2), chord, 0.5 * rng.standard_normal(SR), voice[: int(0.75 * SR)],
           voice[: int(0.55 * SR)], full, chord[: SR + 123]]
    return [np.clip(x, -1.0, 32767 / 32768).astype(np.float32) for x in out]


def test_smile_runner_frames_are_process_signals_bit_for_bit() -> None:
    import opensmile

    smile = opensmile.Smile(feature_set=str(CONFIG), feature_level="func", num_workers=1)
    runner = SmileRunner(CONFIG)
    assert runner.feature_names == list(smile.feature_names)
    compared = 0
    for k, x in enumerate(_signals()):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Segment too short, filling with NaN"
            ref = smile.process_signal(x, SR).to_numpy()
        got = runner.frames(x, SR)
        if np.isnan(ref).all():  # process_signal's one NaN row where openSMILE gave no frame
            assert got.shape == (0, ref.shape[1]), k
            continue
        assert got.dtype == ref.dtype == np.float32
        assert got.shape == ref.shape, k
        assert np.array_equal(got, ref), f"signal {k}: {int((got != ref).sum())} values differ"
        compared += 1
    assert compared >= 6  # the too-short signal is the only one without frames


def test_emobase2010_extractor_rows_are_process_signal_means() -> None:
    import opensmile

    from aanbench.contracts import Item, Media

    smile = opensmile.Smile(feature_set=str(CONFIG), feature_level="func", num_workers=1)
    ex = Emobase2010()
    ex.load(None)
    xs = [x for x in _signals() if x.size >= SR]
    medias = [Media(item=Item(id=f"s{k}", path=None), duration=x.size / SR, audio={SR: x}) for k, x in enumerate(xs)]
    got = ex.extract(medias)
    for k, x in enumerate(xs):
        ref = smile.process_signal(x, SR).to_numpy().astype(np.float64).mean(axis=0).astype(np.float32)
        assert np.array_equal(got[k], ref), k


def test_smile_runner_recovers_after_a_failed_run() -> None:
    runner = SmileRunner(CONFIG)
    x = _signals()[0]
    first = runner.frames(x, SR)
    with pytest.raises(Exception):
        runner.frames(x, 0)  # openSMILE refuses a sample rate of 0
    assert runner._smile is None  # freed: the next signal starts a fresh instance
    assert np.array_equal(runner.frames(x, SR), first)
