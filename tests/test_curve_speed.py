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


@pytest.mark.slow
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


@pytest.mark.slow
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


# --------------------------------------------------------------------------
# curve's scheduling: workers started early, features extracted on the model
# files' headers while the models load; same numbers as one worker


REGISTRY = """
[feature_sets]
speed = ["logmel", "affect", "emobase2010"]

[experiments.speed-ridge]
model = "ridge"
description = "ridge on the weight-free features"
features = "speed"
"""


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    from aanbench.filmwrite import write_film

    from conftest import run_cli

    work = tmp_path_factory.mktemp("curve-speed")
    r = run_cli("datasets", "make-demo", work / "data", "--clips", 8)  # m01 train, m02 test, 4 clips of 4 s each
    assert r.returncode == 0, r.stderr
    r = run_cli("extract", "demo", "--root", work / "data", "--store", work / "store", "-e", "logmel,affect,emobase2010")
    assert r.returncode == 0, r.stdout + r.stderr
    (work / "registry.toml").write_text(REGISTRY)
    bundle = work / "ridge.pt"
    r = run_cli("train", "speed-ridge", "demo", "--store", work / "store", "--out", bundle,
                "--registry", work / "registry.toml")
    assert r.returncode == 0, r.stdout + r.stderr
    # two films of two clips (8 s, a join at 4 s): two 4-s windows each, one per pool worker
    films = [write_film(work / "films" / f"{m}.mp4", sorted((work / "data" / "clips").glob(f"{m}_*.mp4"))[:2])
             for m in ("m02", "m01")]
    return {"work": work, "bundle": bundle, "films": films}


def _arrays(store) -> dict[str, np.ndarray]:
    import zarr

    out: dict[str, np.ndarray] = {}

    def walk(g, prefix: str) -> None:
        for k, v in g.members():
            if isinstance(v, zarr.Group):
                walk(v, f"{prefix}{k}/")
            else:
                out[f"{prefix}{k}"] = v[...]

    walk(zarr.open_group(str(store), mode="r"), "")
    return out


@pytest.mark.slow
def test_early_workers_and_header_extraction_give_one_workers_numbers(small, tmp_path):
    from aanbench.backends.local import WorkerPool
    from aanbench.curve import ModelsLoading, load_models, start_loading
    from aanbench.curve_output import read_curve_csv
    from aanbench.store import FeatureStore
    from aanbench.workflows.curve import curve, film_dataset, model_streams

    loading = start_loading([small["bundle"]])
    assert isinstance(loading, ModelsLoading)
    assert loading.headers[0].payload.features == ["logmel", "affect", "emobase2010"]
    planned: list[int] = []
    with WorkerPool(2, preload=("aanbench.extraction_job",)) as pool:
        fast = curve(small["films"], loading, store=tmp_path / "fast", out_dir=tmp_path / "fast-out", window=4.0,
                     pool=pool, on_planned=lambda plan, skipped, be: planned.append(len(plan.units)))
    slow = curve(small["films"], load_models([small["bundle"]]), store=tmp_path / "slow",
                 out_dir=tmp_path / "slow-out", window=4.0, workers=1)
    assert planned == [2, 2]  # each film: two chunks of one window, one per pool worker
    models = load_models([small["bundle"]])
    for film in small["films"]:
        ds = film_dataset(film, 4.0, 4.0, model_streams(models))
        assert FeatureStore(tmp_path / "fast", mode="r").open_group(ds.name, ds.segmentation).n_chunks == 2
        assert FeatureStore(tmp_path / "slow", mode="r").open_group(ds.name, ds.segmentation).n_chunks == 1
    a, b = _arrays(tmp_path / "fast"), _arrays(tmp_path / "slow")
    data = [k for k in a if k.endswith("/data") and "/features/" in k]
    assert len(data) == 6  # three extractors, two films
    assert sorted(a) == sorted(b)
    for k in a:
        if k.endswith("/done"):
            assert a[k].all() and b[k].all(), k  # chunked differently, all done
            continue
        assert np.array_equal(a[k], b[k]) if a[k].dtype.kind not in "fc" else np.array_equal(a[k], b[k], equal_nan=True), k
    for f, s in zip(fast, slow):
        assert not f.failed and len(f.reasons) == 2  # one per window
        df, ds_ = read_curve_csv(f.csv), read_curve_csv(s.csv)
        for t in ("valence", "arousal"):
            assert np.array_equal(df[t].to_numpy(), ds_[t].to_numpy())


@pytest.mark.slow
def test_start_curve_workers_skips_a_rerun(small, tmp_path):
    from aanbench.workflows.curve import curve, start_curve_workers
    from aanbench.curve import load_models

    film = small["films"][0]
    pool = start_curve_workers(2, films=[film], store=tmp_path / "s", window=4.0)
    assert pool is not None and pool.workers == 2  # nothing extracted yet
    pool.close()
    assert start_curve_workers(1) is None  # one worker: extraction runs in this process
    curve([film], load_models([small["bundle"]]), store=tmp_path / "s", out_dir=tmp_path / "o", window=4.0, workers=1)
    assert start_curve_workers(2, films=[film], store=tmp_path / "s", window=4.0) is None  # all there: a rerun
    # another windowing is another group: workers are started for it
    pool = start_curve_workers(2, films=[film], store=tmp_path / "s", window=2.0)
    assert pool is not None
    pool.close()


@pytest.mark.slow
def test_peek_model_reads_the_header_without_torch_or_running_the_file(small, tmp_path):
    import io
    import pickle
    import subprocess
    import sys
    import zipfile

    from aanbench.curve import peek_model

    code = ("import sys; from aanbench.curve import peek_model; h = peek_model(sys.argv[1]); "
            "print(h.payload.features, h.payload.feature_keys, h.experiment, h.dataset, 'torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code, str(small["bundle"])], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("] ")[0] == "['logmel', 'affect', 'emobase2010'"
    assert r.stdout.strip().endswith("speed-ridge demo False")  # torch not imported

    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("evil/data.pkl", pickle.dumps({"format": "aanbench.bundle/1", "model": "ridge",
                                                 "features": ["logmel"], "targets": {"valence": {"state": Evil()}},
                                                 "x": Evil()}, protocol=2))
    h = peek_model(evil)
    assert not marker.exists()  # the pickle's os.system was never looked up nor called
    assert h is not None and h.payload.features == ["logmel"] and h.targets == ["valence"] and h.model == "ridge"
    with zipfile.ZipFile(tmp_path / "future.pt", "w") as z:  # a format this aanbench does not read
        z.writestr("future/data.pkl", pickle.dumps({"format": "aanbench.bundle/9", "model": "ridge",
                                                   "features": ["logmel"], "targets": {"valence": {}}}, protocol=2))
    assert peek_model(tmp_path / "future.pt") is None  # left to the real loader, which says so before any work
    (tmp_path / "text.pt").write_text("not a zip")
    assert peek_model(tmp_path / "text.pt") is None
    with zipfile.ZipFile(tmp_path / "odd.pt", "w") as z:
        z.writestr("odd/data.pkl", pickle.dumps({"features": "logmel", "target": "valence"}, protocol=2))
    assert peek_model(tmp_path / "odd.pt") is None  # not a list of names: left to the real loader


@pytest.mark.slow
def test_a_reader_that_begins_inside_the_film_gives_a_straight_reads_windows(small):
    """What each worker of a curve decodes for its first window and on is
    what one reader from the film's start decodes: on a film joined from
    clips, audio decoded after a seek differed (the AAC decoder restarted
    mid-film), so the numbers depended on how many workers shared the film."""
    from aanbench.contracts import Item, MediaRequest
    from aanbench.filmdecode import FilmReader

    film = small["films"][0]
    reqs = [MediaRequest(audio_rate=16000), MediaRequest(fps=8.0, short_side=64)]
    items = [Item(id=str(k), path=film, start=2.0 * k, end=2.0 * k + 2.0) for k in range(4)]
    r = FilmReader(film, reqs)
    straight = [r.read(it, reqs) for it in items]
    r.close()
    for k0 in range(1, 4):
        r = FilmReader(film, reqs)
        got = [r.read(it, reqs) for it in items[k0:k0 + 2]]
        r.close()
        for m, ref in zip(got, straight[k0:]):
            assert np.array_equal(m.audio[16000], ref.audio[16000]), (k0, m.item.id)
            assert ref.video.keys() == m.video.keys()
            for key in ref.video:
                assert np.array_equal(m.video[key], ref.video[key]), (k0, m.item.id)


@pytest.mark.slow
def test_configuration_errors_come_before_any_extraction_with_early_workers(small, tmp_path):
    from conftest import run_cli

    film, bundle = small["films"][0], small["bundle"]
    r = run_cli("curve", film, "--model", bundle, "--model", bundle, "--workers", 2, "--store", tmp_path / "s",
                "--out", tmp_path / "o")
    assert r.returncode == 2 and "both predict" in r.stderr
    assert not (tmp_path / "s").exists()  # the models are checked before the workers get any window
    r = run_cli("curve", film, "--model", bundle, "--workers", 2, "--window", 4, "--store", tmp_path / "s",
                "--out", tmp_path / "o")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "o" / f"{film.name}.curve.csv").is_file()
