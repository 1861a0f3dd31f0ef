"""`aanbench curve`: the emotion curve of a film, on a film joined from
generated demo clips with known labels (real MP4 writing and decoding, real
extraction into a real Zarr store, a real model bundle), the page opened in
a real headless Chromium; truncated and unreadable films; single-target
model files (``run --save-models``, ``models import-aan``); a sequence model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest
import zarr

from aanbench.curve_output import read_curve_csv
from aanbench.workflows.curve import demo_film, film_dataset
from aanbench.filmdecode import film_windows, probe_duration
from aanbench.pluginkit.mediawrite import remux_faststart, write_clip, write_song_with_cover
from aanbench.store import FeatureStore

from conftest import REPO, make_clip, run_aanbench, run_cli

CLIPS = 32  # two movies of 16 clips: m01 train, m02 test (64 s)

REGISTRY = """
[feature_sets]
curve-test = ["logmel", "affect"]

[experiments.curve-ridge]
model = "ridge"
description = "ridge on logmel and affect"
features = "curve-test"

[experiments.curve-seq]
model = "example-seq-ridge"
description = "mean over 3 consecutive clips of a movie, then ridge"
features = "curve-test"
params = { alpha = 10.0, sequence_length = 3, val_fraction = 0.0 }
"""


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    work = tmp_path_factory.mktemp("curve")
    r = run_cli("datasets", "make-demo", work / "data", "--clips", CLIPS)
    assert r.returncode == 0, r.stderr
    r = run_cli("extract", "demo", "--root", work / "data", "--store", work / "store", "-e", "logmel,affect")
    assert r.returncode == 0, r.stdout + r.stderr
    (work / "registry.toml").write_text(REGISTRY)
    bundle = work / "ridge.pt"
    r = run_cli("train", "curve-ridge", "demo", "--store", work / "store", "--out", bundle,
                "--registry", work / "registry.toml")
    assert r.returncode == 0, r.stdout + r.stderr
    film, truth = demo_film(work / "data", work / "films" / "test-movie.mp4", split="test")
    return {"work": work, "bundle": bundle, "film": film, "truth": truth, "registry": work / "registry.toml"}


def _comments(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.startswith("#")]


@pytest.mark.slow
def test_joined_film_has_the_clips_one_after_another(demo):
    assert len(demo["truth"]) == 16
    assert [(s, e) for s, e, _ in demo["truth"]] == [(4.0 * i, 4.0 * i + 4.0) for i in range(16)]
    assert probe_duration(demo["film"]) == pytest.approx(64.0, abs=0.1)


def test_curve_writes_csv_png_and_html_one_row_per_window(demo, tmp_path):
    out = tmp_path / "curves"
    r = run_cli("curve", demo["film"], "--model", demo["bundle"], "--window", 4, "--store", tmp_path / "s",
                "--out", out, "--smooth", 12)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "trained on the generated demo dataset" in r.stderr  # the honesty warning
    csv_path = out / "test-movie.mp4.curve.csv"
    df = read_curve_csv(csv_path)
    want = film_windows(probe_duration(demo["film"]), 4, 4)
    assert len(want) == 16
    assert list(df.columns) == ["start", "end", "valence", "arousal", "outside_range", "reason"]
    assert list(zip(df.start, df.end)) == [(float(s), float(e)) for s, e in want]
    assert np.isfinite(df[["valence", "arousal"]].to_numpy()).all()
    assert df.reason.isna().all()
    head = "\n".join(_comments(csv_path))
    assert "experiment curve-ridge" in head and "trained on demo" in head and "seed 0" in head
    assert "warning" in head
    # the scale: the demo's labels lie in -1..1 (from the demo dataset plugin), and what lies outside is marked
    assert "# scale valence: training labels -1 to 1" in head and "# scale arousal: training labels -1 to 1" in head
    v = df[["valence", "arousal"]].to_numpy()
    marked = df.outside_range.fillna("").to_numpy()
    assert [("valence" in m, "arousal" in m) for m in marked] == [(abs(a) > 1, abs(b) > 1) for a, b in v]
    # the windows are the clips: the predictions follow the clips' known labels somewhat
    truth = np.array([lab["arousal"] for _, _, lab in demo["truth"]])
    assert np.corrcoef(truth, df.arousal.to_numpy())[0, 1] > 0.3
    png = out / "test-movie.mp4.curve.png"
    with av.open(str(png)) as c:  # a real PNG of a plot
        frame = next(c.decode(video=0)).to_ndarray(format="rgb24")
    assert frame.shape[0] > 300 and frame.shape[1] > 800 and frame.std() > 10
    # the demo warning is printed in the PNG too (its orange text under the plots)
    f = frame.astype(np.int16)
    orange = (np.abs(f[..., 0] - 0xAA) < 40) & (np.abs(f[..., 1] - 0x44) < 40) & (f[..., 2] < 50)
    plots = int(0.75 * frame.shape[0])  # the axes end above this; the text lines follow
    assert orange[plots:].sum() > 300, orange[plots:].sum()
    page = (out / "test-movie.mp4.curve.html").read_text()
    assert "data:image/png;base64," in page and "curve-ridge" in page
    offline = page.replace('"http://www.w3.org/2000/svg"', "")  # the SVG namespace is a name, never fetched
    assert "http:" not in offline and "https:" not in offline and "src=\"//" not in offline
    assert f'<source src="{os.path.relpath(demo["film"], out)}" type="video/mp4">' in page  # linked, relative
    # the store group holds the film's windows with their times
    ds = film_dataset(demo["film"], 4.0, 4.0, ("video", "audio"))  # logmel and affect: both streams
    assert ds.segmentation.startswith("curve-test-movie-") and ds.segmentation.endswith("-va-w4-h4")
    group = FeatureStore(tmp_path / "s", mode="r").open_group("files", ds.segmentation)
    t = group.item_table()
    assert t.id.tolist()[:2] == ["test-movie.mp4@0-4", "test-movie.mp4@4-8"]
    assert t.start.tolist() == [s for s, _ in want] and t.end.tolist() == [e for _, e in want]


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Chromium:
    """Headless Chromium driven over ``--remote-debugging-pipe`` (the
    DevTools protocol on file descriptors 3 and 4: JSON messages ended by
    NUL), one page, real mouse events; no network port is opened."""

    def __init__(self, profile: Path) -> None:
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def fds() -> None:  # via fresh copies: a pipe end may already be 3 or 4, and dup2(fd, fd) keeps CLOEXEC
            a, b = os.dup(to_child_r), os.dup(from_child_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--mute-audio",
             "--remote-debugging-pipe", f"--user-data-dir={profile}", "--window-size=1200,1000",
             "--autoplay-policy=no-user-gesture-required", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=fds, close_fds=False)
        os.close(to_child_r)
        os.close(from_child_w)
        self._buf = b""
        self._id = 0
        self.session = None

    def call(self, method: str, timeout: float = 60.0, **params):
        import select
        import time

        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            msg["sessionId"] = self.session
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        end = time.monotonic() + timeout
        while True:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply.get("result", {})
            left = end - time.monotonic()
            if left <= 0 or not select.select([self._from_child], [], [], left)[0]:
                raise TimeoutError(method)
            chunk = os.read(self._from_child, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self._buf += chunk

    def open(self, url: str) -> None:
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable")
        self.call("Page.navigate", url=url)

    def js(self, expression: str, timeout: float = 60.0):
        r = self.call("Runtime.evaluate", timeout=timeout, expression=expression, awaitPromise=True,
                      returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait(self, expression: str, timeout: float = 60.0):
        import time

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                v = self.js(expression)
            except RuntimeError:
                v = None
            if v:
                return v
            time.sleep(0.2)
        raise TimeoutError(expression)

    def click(self, x: float, y: float) -> None:
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left",
                      clickCount=0 if kind == "mouseMoved" else 1)

    def hover(self, x: float, y: float) -> None:
        self.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except Exception:  # noqa: BLE001 - it is going away anyway
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_child)
        os.close(self._from_child)


def _x_of_time(browser: Chromium, target: str, t: float) -> tuple[float, float]:
    """Viewport coordinates of time ``t`` on ``target``'s plot (from the page's own axis)."""
    return tuple(browser.js(f"""(function () {{
        var svg = document.querySelector('svg[data-target="{target}"]');
        svg.scrollIntoView({{block: "center"}});
        var r = svg.getBoundingClientRect(), vb = svg.viewBox.baseVal;
        var frame = svg.querySelector("rect");
        var L = +frame.getAttribute("x"), w = +frame.getAttribute("width");
        var dur = JSON.parse(document.getElementById("curve-data").textContent).duration;
        var x = L + {t} / dur * w;
        return [r.left + x / vb.width * r.width, r.top + r.height / 2];
    }})()"""))


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="Chromium not installed (.ci/run installs Debian's chromium)")
def test_the_page_plays_the_film_beside_its_curves_in_a_headless_browser(demo, tmp_path):
    out = tmp_path / "curves"
    r = run_cli("curve", demo["film"], "--model", demo["bundle"], "--window", 4, "--store", tmp_path / "s",
                "--out", out)
    assert r.returncode == 0, r.stdout + r.stderr
    page = out / "test-movie.mp4.curve.html"
    text = page.read_text()
    assert os.path.relpath(demo["film"], out) in text  # linked by relative path ...
    assert page.stat().st_size < demo["film"].stat().st_size  # ... never embedded
    browser = Chromium(tmp_path / "profile")
    try:
        browser.open(page.as_uri())
        assert browser.wait("document.body.getAttribute('data-curves') === 'drawn'")
        # both curves drawn in the page: one line each, one point per window
        assert browser.js("document.querySelectorAll('svg[data-target]').length") == 2
        assert browser.js("document.querySelectorAll('svg[data-target=valence] circle.point').length") == 16
        assert browser.js("document.querySelectorAll('svg[data-target=arousal] polyline.curve').length") == 1
        assert browser.js("document.body.getAttribute('data-plot')") == "loaded"
        # the film plays here (H.264/AAC in MP4)
        assert browser.wait("document.body.getAttribute('data-video') === 'ok'", timeout=60)
        assert browser.js("document.getElementById('film').duration") == pytest.approx(64.0, abs=0.2)
        # values on hover: the window under the pointer, both targets
        x, y = _x_of_time(browser, "arousal", 10.0)
        browser.hover(x, y)
        tip = browser.wait("document.getElementById('tip').style.display === 'block' && "
                           "document.getElementById('tip').textContent")
        df = read_curve_csv(out / "test-movie.mp4.curve.csv")
        assert tip.startswith("8-12 s: valence ") and f"arousal {df.arousal[2]:.3f}" in tip, tip
        # a click on the curves seeks the film there
        x, y = _x_of_time(browser, "valence", 37.0)
        browser.click(x, y)
        browser.wait("Math.abs(document.getElementById('film').currentTime - 37) < 0.5 && "
                     "!document.getElementById('film').seeking")
        assert float(browser.js("document.body.getAttribute('data-clicked')")) == pytest.approx(37.0, abs=0.3)
        # the cursor follows currentTime (set by the player, not by a click)
        browser.js("new Promise(function (ok) { var v = document.getElementById('film');"
                   " v.addEventListener('seeked', function () { setTimeout(ok, 50); }, {once: true});"
                   " v.currentTime = 21.5; })")
        cursor = browser.js("""(function () {
            var c = document.querySelector('svg[data-target=arousal] line.cursor');
            return [+c.getAttribute('x1'), +document.body.getAttribute('data-cursor')]; })()""")
        frame_x = browser.js("""(function () { var f = document.querySelector('svg[data-target=arousal] rect');
            return [+f.getAttribute('x'), +f.getAttribute('width')]; })()""")
        assert cursor[1] == pytest.approx(21.5, abs=0.05)
        assert cursor[0] == pytest.approx(frame_x[0] + 21.5 / 64.0 * frame_x[1], abs=1.0)
        # and during playback
        browser.js("document.getElementById('film').play()")
        browser.wait("document.getElementById('film').currentTime > 22.2")
        moved = browser.js("+document.body.getAttribute('data-cursor')")
        assert moved > 21.6
        browser.js("document.getElementById('film').pause()")
    finally:
        browser.close()


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="Chromium not installed (.ci/run installs Debian's chromium)")
def test_the_page_says_why_when_the_browser_cannot_play_the_film(demo, tmp_path):
    """MPEG-2 video in an MPEG program stream: a codec browsers do not play."""
    film = tmp_path / "old-film.mpg"
    with av.open(str(film), "w", format="mpeg") as c:
        st = c.add_stream("mpeg2video", rate=25)
        st.width, st.height, st.pix_fmt = 160, 120, "yuv420p"
        au = c.add_stream("mp2", rate=32000)
        au.layout = "mono"
        for i in range(25 * 9):
            img = np.full((120, 160, 3), (i * 3) % 255, dtype=np.uint8)
            for p in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(32000 * 9) / 32000)).astype(np.float32)
        for off in range(0, tone.size, 1152):
            af = av.AudioFrame.from_ndarray(tone[None, off:off + 1152], format="fltp", layout="mono")
            af.sample_rate, af.pts = 32000, off
            for p in au.encode(af):
                c.mux(p)
        for s in (st, au):
            for p in s.encode():
                c.mux(p)
    from aanbench.workflows import film_curve
    from aanbench.curve import load_models

    res = film_curve(film, load_models([demo["bundle"]]), store=tmp_path / "s", out_dir=tmp_path / "o", window=4)
    assert res.html is not None and not res.failed
    browser = Chromium(tmp_path / "profile")
    try:
        browser.open(res.html.as_uri())
        assert browser.wait("document.body.getAttribute('data-curves') === 'drawn'")
        assert browser.wait("document.body.getAttribute('data-video') === 'error'", timeout=60)
        why = browser.js("document.getElementById('novideo').textContent")
        assert "cannot play old-film.mpg" in why and "mpeg2video video, mp2 audio in mpg" in why and "curves" in why
        x, y = _x_of_time(browser, "valence", 5.0)  # the curves still work: a click places the cursor
        browser.click(x, y)
        assert float(browser.wait("document.body.getAttribute('data-clicked')")) == pytest.approx(5.0, abs=0.3)
        assert float(browser.js("document.body.getAttribute('data-cursor')")) == pytest.approx(5.0, abs=0.3)
    finally:
        browser.close()


def test_rerun_reuses_the_store(demo, tmp_path):
    from aanbench.curve import load_models
    from aanbench.workflows import film_curve

    models = load_models([demo["bundle"]])
    calls = []
    a = film_curve(demo["film"], models, store=tmp_path / "s", out_dir=tmp_path / "o", window=4,
                   on_progress=calls.append)
    assert sum(c.unit.n_items for c in calls) == 16
    calls.clear()
    b = film_curve(demo["film"], models, store=tmp_path / "s", out_dir=tmp_path / "o", window=4,
                   on_progress=calls.append)
    assert calls == []  # nothing extracted again
    assert np.array_equal(a.values["valence"], b.values["valence"])

    # the store knows a film by its content: a copy elsewhere (new path, new
    # time) finds its features; the same name with other bytes of the same
    # size (a file replaced in place) is extracted again
    moved = tmp_path / "elsewhere" / demo["film"].name
    moved.parent.mkdir()
    moved.write_bytes(demo["film"].read_bytes())
    c = film_curve(moved, models, store=tmp_path / "s", out_dir=tmp_path / "o2", window=4, on_progress=calls.append)
    assert calls == [] and np.array_equal(a.values["valence"], c.values["valence"])

    # after an upgrade (here: an older decoder revision stamped on one array)
    # the film's features are extracted again with this installation instead
    # of being read as they were; half done, they were refused ("Extract into
    # a new store") where the user of `curve` has no store of their own
    from aanbench.media import DECODER_VERSION

    group_dir = tmp_path / "s" / a.group
    [logmel] = [p for p in (group_dir / "features").iterdir() if p.name.startswith("logmel@")]
    for half_done in (False, True):
        meta = json.loads((logmel / "zarr.json").read_text())
        meta["attributes"]["provenance"]["libraries"]["aanbench-decoder"] = "1"
        (logmel / "zarr.json").write_text(json.dumps(meta))
        if half_done:
            zarr.open_array(str(logmel / "done"), mode="r+")[0] = False
        calls.clear()
        d = film_curve(demo["film"], models, store=tmp_path / "s", out_dir=tmp_path / "o4", window=4,
                       on_progress=calls.append)
        assert sum(c.unit.n_items for c in calls) == 16 and {c.unit.extractors for c in calls} == {("logmel",)}
        assert f"{logmel.name}: the features the store held for this film were made by other versions " \
               f"(aanbench-decoder 1 -> {DECODER_VERSION}); extracted again" in d.notes
        meta = json.loads((logmel / "zarr.json").read_text())
        assert meta["attributes"]["provenance"]["libraries"]["aanbench-decoder"] == DECODER_VERSION
        assert zarr.open_array(str(logmel / "done"), mode="r")[:].all()
        assert np.array_equal(a.values["valence"], d.values["valence"])  # nothing else changed: the same curve
    calls.clear()
    film_curve(demo["film"], models, store=tmp_path / "s", out_dir=tmp_path / "o4", window=4, on_progress=calls.append)
    assert calls == []  # made by this installation: reused

    data = bytearray(moved.read_bytes())
    data[len(data) // 2] ^= 0x40  # one bit in the media data: another film of the same size
    moved.write_bytes(bytes(data))
    film_curve(moved, models, store=tmp_path / "s", out_dir=tmp_path / "o3", window=4, on_progress=calls.append)
    assert sum(c.unit.n_items for c in calls) == 16


def test_a_film_shorter_than_a_window_is_one_window_with_its_times(demo, tmp_path):
    """A 1.5-s sting with 4-s windows: one window [0, 1.5) with a value (it
    was one whole-file item without times: empty start and end in the CSV,
    nothing drawn). A store holding the film's windows as an older version
    planned them is replaced, not read as it was."""
    from aanbench.contracts import Item
    from aanbench.curve import load_models
    from aanbench.workflows import film_curve
    from aanbench.workflows.curve import model_streams

    sting = make_clip(tmp_path / "sting.mp4", seconds=1.5, fps=25, size=(120, 160))
    models = load_models([demo["bundle"]])
    ds = film_dataset(sting, 4.0, 4.0, model_streams(models))
    old = FeatureStore(tmp_path / "s").ensure_group(ds.name, [Item(id="sting.mp4", path=sting, group="sting.mp4")],
                                                    segmentation=ds.segmentation, chunk_rows=1, dataset_config=ds.config())
    assert old.n_items == 1
    res = film_curve(sting, models, store=tmp_path / "s", out_dir=tmp_path / "o", window=4)
    assert any(n.startswith("the store held other windows for this film") for n in res.notes), res.notes
    df = read_curve_csv(res.csv)
    assert len(df) == 1 and df.start[0] == 0.0 and 1.4 <= df.end[0] <= 1.5 and df.reason.isna().all()
    assert np.isfinite(df.valence[0]) and np.isfinite(df.arousal[0])
    again = film_curve(sting, models, store=tmp_path / "s", out_dir=tmp_path / "o", window=4)
    assert not any(n.startswith("the store held") for n in again.notes)  # the new group is reused
    assert again.values["valence"][0] == res.values["valence"][0]


@pytest.mark.skipif(_chromium() is None, reason="Chromium not installed (.ci/run installs Debian's chromium)")
def test_truncated_film_reports_the_lost_windows_and_keeps_the_others(demo, tmp_path):
    fast = remux_faststart(demo["film"], tmp_path / "fast.mp4")
    cut = tmp_path / "cut.mp4"
    data = fast.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.6)])
    out = tmp_path / "curves"
    r = run_cli("curve", cut, "--model", demo["bundle"], "--window", 4, "--store", tmp_path / "s",
                "--out", out)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "windows failed" in r.stdout
    df = read_curve_csv(out / "cut.mp4.curve.csv")
    assert len(df) == 16  # every window of the film's header duration is listed
    bad = df.reason.notna()
    assert 0 < bad.sum() < 16
    assert df[~bad].valence.notna().all() and df[bad].valence.isna().all()
    assert df.reason[bad].str.contains("media ends at").all()
    first_bad = int(np.flatnonzero(bad.to_numpy())[0])
    assert not bad.to_numpy()[:first_bad].any() and bad.to_numpy()[first_bad:].all()  # the tail is lost
    assert (out / "cut.mp4.curve.png").is_file() and (out / "cut.mp4.curve.html").is_file()
    browser = Chromium(tmp_path / "profile")  # the page shades the failed windows
    try:
        browser.open((out / "cut.mp4.curve.html").as_uri())
        assert browser.wait("document.body.getAttribute('data-curves') === 'drawn'")
        assert browser.js("document.querySelectorAll('svg[data-target=valence] rect.failed').length") == bad.sum()
    finally:
        browser.close()


def test_a_file_that_is_not_media_gets_exit_2_and_no_files(demo, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_text("this is a text file with a film's name\n" * 50)
    out = tmp_path / "curves"
    r = run_cli("curve", bad, "--model", demo["bundle"], "--store", tmp_path / "s", "--out", out)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "broken.mp4" in r.stderr and "not a film" in r.stderr
    assert not out.exists() or not any(out.iterdir())


def test_a_film_without_a_stream_the_model_needs_is_refused_before_any_work(demo, tmp_path):
    """The demo model's features include video ones: an audio-only file (a
    song, a voice-over) used to be cut into windows that all failed after
    its audio features were extracted; it is refused first, naming what is
    missing."""
    t = np.arange(16000 * 12) / 16000
    song = write_clip(tmp_path / "song.m4a", None, 10, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
    out = tmp_path / "curves"
    r = run_cli("curve", song, "--model", demo["bundle"], "--store", tmp_path / "s", "--out", out)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "song.m4a: not a film the models can draw" in r.stderr, r.stderr
    assert "no video stream, which the model's features need; the file has audio only" in r.stderr
    assert not out.exists() and not (tmp_path / "s").exists()  # nothing extracted, nothing written
    # a song with its album cover: the cover is a picture stream, not footage (every window failed
    # as "media ends at 0.00 s ... (truncated?)" after the audio features were extracted)
    cover = np.zeros((120, 160, 3), np.uint8)
    cover[:, :80] = 200
    mp3 = write_song_with_cover(tmp_path / "song.mp3", (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32),
                                16000, cover)
    r = run_cli("curve", mp3, "-m", demo["bundle"], "--store", tmp_path / "s", "--out", out)  # -m: --model
    assert r.returncode == 2, r.stdout + r.stderr
    assert "the file has audio only (its only picture is a still, the cover art)" in r.stderr, r.stderr
    assert not out.exists() and not (tmp_path / "s").exists()


@pytest.mark.slow
def test_a_folder_gives_one_output_set_per_film_and_lists_what_is_not_media(demo, tmp_path):
    films = tmp_path / "films"
    films.mkdir()
    shutil.copy(demo["film"], films / "one.mp4")
    make_clip(films / "sub" / "two.mp4", seconds=8.0, fps=10, size=(120, 160))
    (films / "notes.txt").write_text("not a film")  # not a media name: not listed at all
    (films / "fake.mp4").write_text("a text file named .mp4")
    write_clip(films / "voice.m4a", None, 10, np.zeros(16000 * 8, np.float32), 16000)  # no video: listed too
    out = tmp_path / "curves"
    r = run_cli("curve", films, "--model", demo["bundle"], "--window", 4, "--store", tmp_path / "s",
                     "--out", out)
    assert r.returncode == 1, r.stdout + r.stderr  # in a batch: exit 1, the bad file listed with its reason
    assert "fake.mp4" in r.stdout and "not films" in r.stdout
    assert "voice.m4a: no video stream" in r.stdout, r.stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{n}.curve.{x}" for n in ("one.mp4", "two.mp4") for x in ("csv", "png", "html"))
    assert len(read_curve_csv(out / "one.mp4.curve.csv")) == 16 and len(read_curve_csv(out / "two.mp4.curve.csv")) == 2


def test_audio_that_outlasts_the_video_gets_every_window_and_exit_0(demo, tmp_path):
    """A common mismatch (58.08 s of video, 58.43 s of audio in the issue):
    windows are planned on what both streams cover."""
    fps, rate = 10, 16000
    rng = np.random.default_rng(1)
    frames = np.repeat(rng.integers(0, 255, (1, 120, 160, 3), dtype=np.uint8), 100, axis=0)  # 10.0 s of video
    frames[:, 40:60, :40] = 255
    t = np.arange(int(10.35 * rate)) / rate  # 10.35 s of audio
    film = write_clip(tmp_path / "longer-audio.mp4", frames, fps, (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32),
                      rate)
    assert probe_duration(film) == pytest.approx(10.35, abs=0.01)  # the container: its longest stream
    assert probe_duration(film, ["video", "audio"]) == pytest.approx(10.0, abs=0.01)
    assert probe_duration(film, ["audio"]) == pytest.approx(10.35, abs=0.01)
    out = tmp_path / "curves"
    r = run_cli("curve", film, "--model", demo["bundle"], "--window", 4, "--store", tmp_path / "s",
                     "--out", out)
    assert r.returncode == 0, r.stdout + r.stderr
    df = read_curve_csv(out / "longer-audio.mp4.curve.csv")
    assert list(zip(df.start, df.end)) == [(0.0, 4.0), (4.0, 8.0), (8.0, 10.0)]
    assert df.reason.isna().all() and df[["valence", "arousal"]].notna().all().all()
    assert "video 10.00 s, audio 10.35 s" in "\n".join(_comments(out / "longer-audio.mp4.curve.csv"))


def test_configuration_errors_exit_2(demo, tmp_path):
    r = run_cli("curve", demo["film"], "--model", tmp_path / "missing.pt", "--out", tmp_path)
    assert r.returncode == 2 and "no such model file" in r.stderr
    r = run_cli("curve", demo["film"], "--model", demo["bundle"], "--window", 0, "--out", tmp_path)
    assert r.returncode == 2 and "positive" in r.stderr
    r = run_cli("curve", tmp_path / "nofilm.mp4", "--model", demo["bundle"], "--out", tmp_path)
    assert r.returncode == 2 and "no such film" in r.stderr
    r = run_cli("curve", demo["film"], "--model", demo["bundle"], "--model", demo["bundle"], "--out", tmp_path)
    assert r.returncode == 2 and "both predict" in r.stderr
    other = tmp_path / "other" / demo["film"].name
    other.parent.mkdir()
    shutil.copy(demo["film"], other)
    r = run_cli("curve", demo["film"], other, "--model", demo["bundle"], "--out", tmp_path)
    assert r.returncode == 2 and "same name" in r.stderr


def _damaged_copies(bundle: Path, folder: Path) -> dict[str, Path]:
    """Copies of a ridge bundle whose header still reads well (what `curve`
    plans the extraction from): one for a newer file format, one naming a
    model plugin that is not installed, one whose valence weights lack five
    values, one whose arousal standardiser lacks one feature."""
    import torch

    good = torch.load(bundle, weights_only=True)
    out = {}

    def save(name: str, payload: dict) -> None:
        out[name] = folder / f"{name}.pt"
        torch.save(payload, out[name])

    save("future", {**good, "format": "aanbench.bundle/9"})
    save("no-plugin", {**good, "model": "no-such-model"})
    short = {t: dict(v) for t, v in good["targets"].items()}
    short["valence"]["state"] = {**short["valence"]["state"], "w": short["valence"]["state"]["w"][:-5]}
    save("short-weights", {**good, "targets": short})
    scaler = {t: dict(v) for t, v in good["targets"].items()}
    sd = scaler["arousal"]["standardize"]
    scaler["arousal"]["standardize"] = {"mean": [m[:-1] for m in sd["mean"]], "std": sd["std"]}
    save("short-scaler", {**good, "targets": scaler})
    return out


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_model_that_cannot_predict_is_refused_naming_the_file(demo, tmp_path, workers):
    """A model file whose header reads well but which cannot predict is
    refused with exit 2, naming the file and the problem: before any
    extraction where it is loaded first (one worker; a file format or model
    plugin this aanbench does not know, with any number), else at the
    latest once the film's windows are extracted (they stay in the store)."""
    bad = _damaged_copies(demo["bundle"], tmp_path)
    expected = {"future": "model file format aanbench.bundle/9 is not one this aanbench reads",
                "no-plugin": "unknown model 'no-such-model'",
                "short-weights": "target valence: its state does not fit model 'ridge' on features of dims",
                "short-scaler": "targets.arousal.standardize.mean[0] has shape [133], expected [134]"}
    for name, path in bad.items():
        store = tmp_path / f"store-{name}"
        r = run_cli("curve", demo["film"], "--model", path, "--out", tmp_path / f"out-{name}", "--store", store,
                    "--workers", workers)
        msg = " ".join(r.stderr.split())
        assert r.returncode == 2, (name, r.stdout[-2000:], r.stderr[-2000:])
        assert f"error: {path}: " in msg and expected[name] in msg, (name, msg)
        assert not (tmp_path / f"out-{name}").exists() or not list((tmp_path / f"out-{name}").iterdir())
        if workers == "1" or name in ("future", "no-plugin"):
            assert not store.exists(), (name, "extracted before the model was refused")


def test_check_bundle_passes_the_models_that_predict(demo):
    from aanbench.bundle import ModelBundle
    from aanbench.modelfile import load_any
    from aanbench.plugin_manager import get_plugins
    from aanbench.predict import check_bundle

    bundle = load_any(demo["bundle"])
    assert isinstance(bundle, ModelBundle) and bundle.dims
    check_bundle(bundle, get_plugins())  # raises on a model that cannot predict


def test_single_target_model_files_from_run_save_models(demo, tmp_path):
    models = tmp_path / "models"
    r = run_cli("run", "curve-ridge", "demo", "--store", demo["work"] / "store", "--out", tmp_path / "res",
                "--registry", demo["registry"], "--save-models", models)
    assert r.returncode == 0, r.stdout + r.stderr
    files = sorted(models.rglob("*"))
    arousal = [p for p in files if p.is_file() and "arousal" in p.name]
    assert arousal, files
    out = tmp_path / "curves"
    r = run_cli("curve", demo["film"], "--model", arousal[0], "--window", 4, "--store", tmp_path / "s",
                "--out", out)
    assert r.returncode == 0, r.stdout + r.stderr
    df = read_curve_csv(out / "test-movie.mp4.curve.csv")
    assert list(df.columns) == ["start", "end", "arousal", "outside_range", "reason"] and len(df) == 16
    assert df.arousal.notna().all()


def _reference_models() -> Path:
    here = REPO.parent / "shared" / "reference" / "attendaffectnet" / "trained_models"
    return here if here.is_dir() else Path("/work/shared/reference/attendaffectnet/trained_models")


@pytest.mark.skipif(not _reference_models().is_dir(), reason="AttendAffectNet reference checkpoints not found")
def test_converted_published_checkpoint_draws_a_curve_from_stored_features(demo, tmp_path):
    """A checkpoint converted by `models import-aan` takes features whose
    extractors need weight files we cannot have here; with the film's window
    features already in the store (imported), curve needs no extractor."""
    ckpt = _reference_models() / "MDB_arousal_COGNIMUSE_attention_model_Feature_AAN_video_audio.pth"
    model = tmp_path / "arousal.pt"
    r = run_cli("models", "import-aan", ckpt, "--out", model)
    assert r.returncode == 0, r.stdout + r.stderr
    from aanbench.modelfile import load_any

    payload = load_any(model)
    dims = payload["targets"]["arousal"]["state"]["config"]["dims"]
    from aanbench.curve import CurveModel
    from aanbench.workflows.curve import model_streams

    ds = film_dataset(demo["film"], 5.0, 5.0, model_streams([CurveModel(payload, str(model))]))
    items = ds.items(demo["film"])
    store = FeatureStore(tmp_path / "s")
    group = store.ensure_group(ds.name, items, segmentation=ds.segmentation, chunk_rows=32,
                               dataset_config=ds.config())
    rng = np.random.default_rng(0)
    for name, dim in zip(payload["features"], dims):
        group.import_rows(f"{name}@imported", rng.normal(size=(len(items), dim)).astype(np.float32),
                          {"extractor": name, "version": "imported", "dim": dim, "source": "test rows"})
    out = tmp_path / "curves"
    r = run_cli("curve", demo["film"], "--model", model, "--store", tmp_path / "s", "--out", out,
                env={"AANBENCH_WEIGHTS": str(tmp_path / "no-weights")})
    assert r.returncode == 0, r.stdout + r.stderr
    df = read_curve_csv(out / "test-movie.mp4.curve.csv")
    assert list(df.columns) == ["start", "end", "arousal", "outside_range", "reason"]
    assert len(df) == len(items) and df.arousal.notna().all() and df.arousal.std() > 0


@pytest.mark.slow  # fresh processes (a plugin found on PYTHONPATH)
def test_sequence_model_gets_one_prediction_per_window(demo, tmp_path):
    site = tmp_path / "site"
    dist = site / "aanbench_example_seq-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: aanbench-example-seq\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[aanbench]\nexample_seq = aanbench_example.meanseq\n")
    env = {"PYTHONPATH": os.pathsep.join([str(site), str(REPO / "tests" / "thirdparty_plugin"),
                                          os.environ.get("PYTHONPATH", "")])}
    bundle = tmp_path / "seq.pt"
    # a fresh process: the sequence model is a plugin found on this PYTHONPATH
    r = run_aanbench("train", "curve-seq", "demo", "--store", demo["work"] / "store", "--out", bundle,
                     "--registry", demo["registry"], env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    out = tmp_path / "curves"
    r = run_aanbench("curve", demo["film"], "--model", bundle, "--window", 4, "--store", tmp_path / "s",
                     "--out", out, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "sequences of 3 windows" in r.stdout
    df = read_curve_csv(out / "test-movie.mp4.curve.csv")
    assert len(df) == 16 and df.valence.notna().all() and df.arousal.notna().all()


@pytest.mark.slow
def test_demo_curve_draws_the_test_movies_with_a_bundle_trained_on_the_others(demo, tmp_path):
    """What `aanbench demo` calls last (aanbench.workflows.demo_curve)."""
    from aanbench.workflows import demo_curve

    work = tmp_path / "demo"
    res = demo_curve(work, demo["work"] / "store", data=demo["work"] / "data", experiment="curve-ridge",
                     registry=demo["registry"])
    assert res.csv == work / "curve" / "demo-test-movies.mp4.curve.csv"
    assert res.png.is_file() and res.html.is_file() and not res.failed
    assert res.warnings and "demo" in res.warnings[0]
    df = read_curve_csv(res.csv)
    truth = read_curve_csv(work / "curve" / "truth.csv")
    assert len(df) == len(truth) == 16
    assert np.allclose(df[["start", "end"]].to_numpy(), truth[["start", "end"]].to_numpy())
    bundle = json.loads(run_cli("models", "info", work / "curve" / "demo-curve-ridge.pt", "--json").stdout)
    assert bundle["dataset"]["name"] == "demo" and bundle["experiment"]["name"] == "curve-ridge"
