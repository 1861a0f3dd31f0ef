"""``emobase2010`` as the AttendAffectNet authors computed it, checked
against the structure of their published sample features
(``shared/reference/attendaffectnet/sample_inputs/emobase_sample.h5``: 10
five-second segments of "Million Dollar Baby"): real openSMILE on a 5-s
segment."""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path

import numpy as np
import pytest

from aanbench.contracts import Item, Media
from aanbench_plugins.extractors import emobase2010 as emo_mod
from aanbench_plugins.extractors.emobase2010 import CONFIG, Emobase2010

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "reference" / "attendaffectnet" / "sample_inputs" / "emobase_sample.h5"
if not SAMPLE.is_file():  # a clone elsewhere: the shared folder of this workplace (as the other reference tests)
    SAMPLE = Path("/work/shared/reference/attendaffectnet/sample_inputs/emobase_sample.h5")
SR = 16000


def _voice_like(seconds: float, seed: int = 0) -> np.ndarray:
    t = np.arange(int(round(seconds * SR))) / SR
    rng = np.random.default_rng(seed)
    f0 = 180 * (1 + 0.15 * np.sin(2 * np.pi * 0.6 * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voiced = sum(np.sin(k * phase) / k for k in range(1, 6))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 1.5 * t) ** 2  # syllable-like bursts
    return (0.2 * voiced * envelope + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def _media(audio: np.ndarray) -> Media:
    return Media(item=Item("seg", None), duration=audio.size / SR, audio={SR: audio})


@pytest.fixture(scope="module")
def emobase() -> Emobase2010:
    e = Emobase2010()
    e.load(None)
    return e


@pytest.fixture(scope="module")
def segment(emobase: Emobase2010) -> np.ndarray:
    """The per-window rows of one 5.00-s segment."""
    return emobase.windows(_media(_voice_like(5.0)))


@pytest.fixture(scope="module")
def sample() -> np.ndarray:
    if not SAMPLE.is_file():
        pytest.skip(f"published sample not here: {SAMPLE}")
    import h5py

    with h5py.File(SAMPLE, "r") as f:
        return np.asarray(f["default"], dtype=np.float64)


def _positions(emobase: Emobase2010) -> list[int]:
    names = emobase.feature_names()
    pos = [i for i, n in enumerate(names) if n.endswith("_maxPos") or n.endswith("_minPos")]
    assert len(pos) == 152
    return pos


def test_turn_duration_is_0_32_in_every_window(emobase: Emobase2010, segment: np.ndarray, sample: np.ndarray) -> None:
    names = emobase.feature_names()
    assert names[-1] == "F0final__Turn_duration" and names[-2] == "F0final__Turn_numOnsets"
    np.testing.assert_allclose(segment[:, -1], 0.32, rtol=0, atol=1e-6)
    # the published sample: the mean of 0.32 in float32 over each segment's windows
    np.testing.assert_allclose(sample[:, -1], 0.32, rtol=0, atol=1e-6)


def test_positions_are_relative_to_the_window(emobase: Emobase2010, segment: np.ndarray, sample: np.ndarray) -> None:
    """Extremes.norm = segment: maxPos/minPos in [0, 1] per window; the
    sample's columns at the same indices are in [0, 1] too (so the column
    order is the authors'), and the non-positional columns are not all so."""
    pos = _positions(emobase)
    assert segment[:, pos].min() >= 0.0 and segment[:, pos].max() <= 1.0
    assert segment[:, pos].max() > 0.5  # not all zero: the positions move within the window
    row = emobase.extract_one(_media(_voice_like(5.0)))
    assert 0.0 <= row[pos].min() and row[pos].max() <= 1.0
    assert sample[:, pos].min() >= 0.0 and sample[:, pos].max() <= 1.0
    others = np.setdiff1d(np.arange(sample.shape[1]), pos)
    outside = ((sample[:, others] < 0) | (sample[:, others] > 1)).any(axis=0)
    assert outside.sum() > 500, outside.sum()


def test_windows_per_segment(emobase: Emobase2010, segment: np.ndarray, sample: np.ndarray) -> None:
    """5.00 s gives 110 windows here: 118 LLD frames of 320 ms at a 40 ms
    step, less the pitch smoother's one-frame look-ahead, less 7 for the
    8-frame window. The sample's onset counts are multiples of 1/105, i.e.
    105 windows per segment, which this openSMILE gives for 4.80 s."""
    lld_frames = int(np.floor((5.0 - 0.32) / 0.04 + 1e-9)) + 1
    assert lld_frames == 118
    assert segment.shape == (lld_frames - 8, 1582)
    assert emobase.windows(_media(_voice_like(4.8))).shape[0] == 105
    counts = sample[:, -2] * 105  # numOnsets averaged over 105 windows of 0 or 1
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-3)
    assert not np.allclose(sample[:, -2] * 110, np.round(sample[:, -2] * 110), atol=1e-3)
    # our onset column: each window counts 0 or 1 onsets
    assert set(np.unique(segment[:, -2])) <= {0.0, 1.0}


def test_row_is_the_mean_of_the_windows(emobase: Emobase2010, segment: np.ndarray) -> None:
    row = emobase.extract([_media(_voice_like(5.0))])[0]
    np.testing.assert_array_equal(row, segment.mean(axis=0).astype(np.float32))


def test_too_short_for_one_window(emobase: Emobase2010) -> None:
    from aanbench.contracts import ItemError

    with pytest.raises(ItemError, match="audio too short"):
        emobase.extract([_media(_voice_like(0.5))])
    assert emobase.windows(_media(_voice_like(0.7))).shape[0] >= 1


def test_provenance_names_the_packaged_config_and_version_2(tmp_path: Path) -> None:
    import opensmile

    e = Emobase2010()
    assert e.version == "2"  # version 1 (the wheel's IS10 config) lives in other arrays
    cfg = e.config()
    assert cfg["opensmile_version"] == opensmile.__version__
    assert cfg["config_sha256"] == hashlib.sha256(CONFIG.read_bytes()).hexdigest()
    assert (cfg["lld_frame_s"], cfg["lld_step_s"], cfg["window_s"], cfg["hop_s"]) == (0.32, 0.04, 0.32, 0.04)
    assert cfg["extremes_norm"] == "segment"
    # shipped as package data
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "*.conf" in data["aanbench_plugins.extractors"]
    assert CONFIG.parent == Path(emo_mod.__file__).resolve().parent


def test_missing_config_is_a_clear_error(monkeypatch, tmp_path: Path) -> None:
    from aanbench.contracts import AanbenchError

    monkeypatch.setattr(emo_mod, "CONFIG", tmp_path / "gone.conf")
    with pytest.raises(AanbenchError, match="cannot read its openSMILE config .*gone.conf"):
        Emobase2010().load(None)
