"""``emobase2010``: openSMILE's INTERSPEECH 2010 paralinguistic set (1,582
functionals), on 320 ms windows with a 40 ms hop, averaged over windows.

AttendAffectNet (Thao et al. 2020) uses the openSMILE "emobase2010" set,
computed on 320 ms frames with a 40 ms hop and averaged over frames to one
vector per item. The ``opensmile`` 2.6.0 wheel has no ``emobase2010.conf``;
its ``is09-13/IS10_paraling_compat.conf`` (``opensmile.FeatureSet.IS10``)
gives the same 1,582 functionals: (34 + 34) LLD and delta contours x 21
functionals + (4 + 4) x 19 + 2 (pitch onsets, turn duration).

That config computes its functionals over the whole input
(``frameMode = full``). We derive a variant from the installed wheel's file
at load time, changing only the three ``cFunctionals`` sections to
``frameMode = fixed``, ``frameSize = 0.32``, ``frameStep = 0.04``, and write
it, named by its SHA-256, under the temporary directory (``aanbench-opensmile-<uid>``;
an existing file is used only if its SHA-256 matches). The config is not
copied into this repository: it carries audEERING's licence and stays tied
to the installed wheel. The config has no relative includes; the source and
sink includes are absolute paths that ``opensmile.Smile`` fills in.

Per item: one openSMILE call on the whole window (16 kHz mono), giving
``(n_windows, 1582)``; the output row is the mean over windows (float64
accumulation, stored as float32). Units are openSMILE's (see its feature
names, ``Emobase2010.feature_names()`` after :meth:`load`).

Edge cases, as measured with opensmile 2.6.0:

* Audio shorter than one 320 ms window raises ``ItemError("audio too short")``.
  openSMILE's pitch and delta stages add look-ahead, so it yields its first
  window only from about 0.38 s of audio; between 0.32 s and that, it yields
  nothing and that is reported the same way.
* All-zero (silent) audio gives finite numbers (openSMILE floors its logs);
  any non-finite output would be raised as an ``ItemError``, never stored.
* ``opensmile`` converts float audio to int16 by ``x * 32768`` without
  clipping, so a sample of exactly +1.0 wraps to -32768; we clip to
  ``[-1, 32767/32768]`` first.

Licence: the ``opensmile`` package carries audEERING's research licence
(non-commercial use) beside its MIT metadata.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from aanbench import hookimpl
from aanbench.contracts import AanbenchError, Extractor, ItemError, LoadContext, Media, MediaRequest

RATE = 16000
WINDOW_S = 0.32
HOP_S = 0.04
DIM = 1582
BASE_CONFIG = "is09-13/IS10_paraling_compat.conf"
N_FUNCTIONALS_SECTIONS = 3  # functL1, functL1nz, functOnsets
_PATCH = {"frameMode": "fixed", "frameSize": f"{WINDOW_S:g}", "frameStep": f"{HOP_S:g}"}
_SECTION = re.compile(r"^\s*\[\s*([^\]:]+?)\s*:\s*([^\]]+?)\s*\]")
_KEY = re.compile(r"^\s*([A-Za-z0-9_.]+)\s*=")

_lock = threading.Lock()
_cache: dict[str, tuple[str, str]] = {}


def _opensmile_config_root() -> Path:
    import opensmile

    return Path(opensmile.__file__).resolve().parent / "core" / "config"


def patch_functionals(text: str) -> str:
    """Return ``text`` (an openSMILE config) with every ``cFunctionals``
    section set to fixed 320 ms windows with a 40 ms hop.

    Raises :class:`AanbenchError` when the file does not have the layout we
    expect (three ``cFunctionals`` sections, each with ``frameMode``,
    ``frameSize`` and ``frameStep``), so a changed wheel fails loudly.
    """
    out: list[str] = []
    section_type: str | None = None
    seen: dict[str, set[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        m = _SECTION.match(line)
        if m:
            current, section_type = m.group(1), m.group(2)
            if section_type == "cFunctionals":
                seen.setdefault(current, set())
        elif section_type == "cFunctionals" and current is not None:
            k = _KEY.match(line)
            if k and k.group(1) in _PATCH:
                key = k.group(1)
                line = f"{key} = {_PATCH[key]}"
                seen[current].add(key)
        out.append(line)
    if len(seen) != N_FUNCTIONALS_SECTIONS or any(v != set(_PATCH) for v in seen.values()):
        raise AanbenchError(
            f"opensmile's {BASE_CONFIG} has an unexpected layout "
            f"(cFunctionals sections and patched keys: { {k: sorted(v) for k, v in seen.items()} }); "
            "emobase2010 cannot derive its 320 ms / 40 ms variant"
        )
    return "\n".join(out) + "\n"


def derived_config() -> tuple[str, str]:
    """``(text, sha256)`` of the 320 ms / 40 ms variant of the wheel's IS10 config."""
    with _lock:
        if "cfg" not in _cache:
            src = _opensmile_config_root() / BASE_CONFIG
            try:
                text = patch_functionals(src.read_text(encoding="utf-8"))
            except OSError as exc:
                raise AanbenchError(f"cannot read openSMILE config {src}: {exc}") from None
            _cache["cfg"] = (text, hashlib.sha256(text.encode("utf-8")).hexdigest())
        return _cache["cfg"]


def write_derived_config(directory: Path | None = None) -> Path:
    """Write the derived config (content-addressed, atomically) and return its path."""
    text, sha = derived_config()
    if directory is None:
        user = str(os.getuid()) if hasattr(os, "getuid") else "user"
        directory = Path(tempfile.gettempdir()) / f"aanbench-opensmile-{user}"
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"IS10_paraling_compat_w320_h40_{sha[:16]}.conf"
    if path.exists() and hashlib.sha256(path.read_bytes()).hexdigest() == sha:
        return path
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".emobase2010-", suffix=".conf")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _opensmile_version() -> str:
    import opensmile

    return str(getattr(opensmile, "__version__", "unknown"))


class Emobase2010(Extractor):
    """openSMILE IS10 / emobase2010 functionals (320 ms windows, 40 ms hop),
    averaged to ``float32 (1582,)`` per item."""

    name = "emobase2010"
    version = "1"
    modality = "audio"
    dim = DIM
    needs = MediaRequest(audio_rate=RATE)
    description = (
        "openSMILE INTERSPEECH 2010 paralinguistic set (emobase2010, 1582 functionals) "
        "on 320 ms windows with 40 ms hop, averaged over windows"
    )
    deterministic = True

    def __init__(self) -> None:
        self._smile: Any = None

    def __getstate__(self) -> dict[str, Any]:  # the openSMILE handle does not travel
        state = self.__dict__.copy()
        state["_smile"] = None
        return state

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        _, sha = derived_config()
        cfg.update(
            {
                "opensmile_version": _opensmile_version(),
                "base_config": BASE_CONFIG,
                "config_sha256": sha,
                "feature_level": "func",
                "window_s": WINDOW_S,
                "hop_s": HOP_S,
                "pooling": "mean over windows",
                "input_clip": [-1.0, 32767 / 32768],
            }
        )
        return cfg

    def load(self, ctx: LoadContext | None = None) -> None:
        import opensmile

        path = write_derived_config()
        smile = opensmile.Smile(feature_set=str(path), feature_level="func", num_workers=1)
        n = len(smile.feature_names)
        if n != DIM:
            raise AanbenchError(f"emobase2010: openSMILE config gives {n} features, expected {DIM}")
        self._smile = smile

    def feature_names(self) -> list[str]:
        """openSMILE's names of the 1,582 features, in output order."""
        if self._smile is None:
            self.load()
        return list(self._smile.feature_names)

    def extract_one(self, media: Media) -> np.ndarray:
        """``float32 (1582,)`` for one item; raises :class:`ItemError`."""
        if self._smile is None:
            self.load()
        audio = _audio_of(media, RATE)
        seconds = audio.size / RATE
        if audio.size < int(round(WINDOW_S * RATE)):
            raise ItemError(f"audio too short: {seconds:.3f} s < one {WINDOW_S * 1000:.0f} ms window")
        x = np.clip(audio, -1.0, 32767 / 32768).astype(np.float32, copy=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # opensmile warns "Segment too short"; checked below
            frames = self._smile.process_signal(x, RATE).to_numpy()
        if frames.ndim != 2 or frames.shape[1] != DIM:
            raise ItemError(f"openSMILE returned shape {frames.shape}, expected (n, {DIM})")
        if frames.shape[0] == 0 or np.isnan(frames).all():
            raise ItemError(
                f"audio too short: {seconds:.3f} s gives no complete {WINDOW_S * 1000:.0f} ms window in openSMILE "
                "(its pitch and delta stages need about 0.38 s)"
            )
        if not np.isfinite(frames).all():
            raise ItemError(f"openSMILE produced {int((~np.isfinite(frames)).sum())} non-finite values")
        return frames.astype(np.float64).mean(axis=0).astype(np.float32)

    def extract(self, batch: Sequence[Media]) -> np.ndarray:
        """``float32 (len(batch), 1582)``; one openSMILE call per item."""
        out = np.empty((len(batch), DIM), dtype=np.float32)
        for i, media in enumerate(batch):
            out[i] = self.extract_one(media)
        return out


def _audio_of(media: Media, rate: int) -> np.ndarray:
    """The item's mono audio at ``rate`` as a 1-D float32 array, or ItemError."""
    if rate not in media.audio:
        raise ItemError("no audio stream")
    audio = np.asarray(media.audio[rate], dtype=np.float32).reshape(-1)
    if not np.isfinite(audio).all():
        raise ItemError("audio contains non-finite samples")
    return audio


@hookimpl
def aanbench_extractors() -> list[Extractor]:
    return [Emobase2010()]
