"""The files of a curve, from a FilmCurve made by hand (a shipped named
model's bundle as its model): the scale of the training labels and what
lies outside it in the CSV, PNG and page; smoothing that never bridges a
failed window; the y-axis on the whole label range."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import av
import numpy as np
import pytest

from aanbench.curve import CurveModel, FilmCurve, label_scale, load_models
from aanbench.curve_output import axis_range, moving_average, page_data, plot_curve, read_curve_csv, \
    write_curve_csv, write_curve_html


def test_moving_average_never_bridges_a_failed_window():
    t = np.arange(7) * 5.0 + 2.5
    y = np.array([1.0, 1.0, 1.0, np.nan, 5.0, 5.0, 5.0])
    got = moving_average(t, y, 30.0)  # 30 s reach would span the gap
    assert np.isnan(got[3])
    assert np.allclose(got[:3], 1.0) and np.allclose(got[4:], 5.0)
    # without a gap the same reach mixes them
    assert moving_average(t, np.array([1.0, 1, 1, 3, 5, 5, 5]), 30.0)[2] == pytest.approx((1 + 1 + 1 + 3 + 5 + 5) / 6)


@pytest.fixture(scope="module")
def cognimuse_model() -> CurveModel:
    [m] = load_models(["aan-cognimuse"])
    return m


def _curve(model: CurveModel, tmp_path: Path, values: dict[str, list[float]], reasons: list[str]) -> FilmCurve:
    n = len(reasons)
    film = tmp_path / "film.mp4"
    film.write_bytes(b"")
    return FilmCurve(film=film, start=np.arange(n) * 5.0, end=np.arange(n) * 5.0 + 5.0,
                     values={t: np.array(v, np.float32) for t, v in values.items()}, reasons=reasons,
                     models=[model], window=5.0, hop=5.0, group="files/x", scale=label_scale([model]))


def test_scale_comes_from_the_bundle_or_the_dataset_plugin(cognimuse_model):
    s = label_scale([cognimuse_model])  # the named bundle carries its range and units
    assert s.ranges == {"valence": (-1.0, 1.0), "arousal": (-1.0, 1.0)}
    assert s.units["valence"] and "cognimuse" in s.source["valence"]
    other = dataclasses.replace(cognimuse_model.payload, dataset={"name": "eimt16"})  # the plugin's range
    s2 = label_scale([CurveModel(other, "x")])
    assert s2.ranges["arousal"] == (1.0, 5.0) and "plugin" in s2.source["arousal"]
    nowhere = dataclasses.replace(cognimuse_model.payload, dataset={"name": "nowhere"})
    s3 = label_scale([CurveModel(nowhere, "y")])
    assert s3.ranges == {} and "unknown" in s3.describe("valence")
    assert not s3.outside("valence", np.array([100.0])).any()


def test_values_outside_the_training_range_are_marked_in_csv_png_and_page(cognimuse_model, tmp_path):
    res = _curve(cognimuse_model, tmp_path, {"arousal": [0.2, 1.7, np.nan, -0.4, 728.7],
                                             "valence": [0.1, 0.3, np.nan, -1.2, 0.0]},
                 ["", "", "media ends at 12.1 s of a 15.0 s window", "", ""])
    csv_path = write_curve_csv(res, tmp_path / "c.csv")
    df = read_curve_csv(csv_path)
    assert list(df.columns) == ["start", "end", "arousal", "valence", "outside_range", "reason"]
    assert df.outside_range.fillna("").tolist() == ["", "arousal", "", "valence", "arousal"]
    text = csv_path.read_text()
    assert "# scale arousal: training labels -1 to 1" in text and "2 values outside it" in text
    png = plot_curve(res, tmp_path / "c.png", smooth=15.0)
    with av.open(str(png)) as c:
        img = next(c.decode(video=0)).to_ndarray(format="rgb24")
    assert img.shape[1] > 1000 and img.std() > 10
    page = write_curve_html(res, tmp_path / "c.html", png).read_text()
    data = json.loads(re.search(r'<script type="application/json" id="curve-data">(.*?)</script>', page,
                                re.S).group(1))
    assert data["outside"]["arousal"] == [False, True, False, False, True]
    assert data["values"]["valence"][2] is None and data["reasons"][2].startswith("media ends")
    assert data["ranges"]["valence"] == [-1.0, 1.0]
    assert "2 values outside it" in page and "<source src=\"film.mp4\"" in page
    assert data == page_data(res)


def test_the_y_axis_shows_the_whole_label_range(cognimuse_model, tmp_path):
    flat = _curve(cognimuse_model, tmp_path, {"arousal": [0.01, 0.02, 0.015], "valence": [0.0, 0.01, 0.0]},
                  ["", "", ""])
    lo, hi = axis_range(flat)
    assert lo < -1.0 and hi > 1.0  # a flat line looks flat, not dramatic
    nowhere = CurveModel(dataclasses.replace(cognimuse_model.payload, dataset={"name": "nowhere"}), "y")
    assert axis_range(_curve(nowhere, tmp_path, {"arousal": [0.0], "valence": [0.0]}, [""])) is None
