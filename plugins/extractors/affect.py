"""``affect``: classic weight-free affective video descriptors (23 dims).

In the spirit of Hanjalic & Xu (2005, "Affective video content
representation and modeling": motion activity, shot-cut rate) and Wang &
Cheong (2006, "Affective understanding in film": lighting key, colour energy,
hue). Pure numpy, no learned weights, deterministic.

Input: frames sampled at 8 fps over the item's window, resized so the short
side is 64 px, ``uint8 (T, H, W, 3)`` RGB (``T >= 2``). Each pixel is scaled
to ``[0, 1]``; luma ``Y = 0.299 R + 0.587 G + 0.114 B`` (Rec. 601); HSV by
the usual hexcone formulas (``V = max(R, G, B)``, ``S = (max - min) / max``,
0 where ``max = 0``, hue ``h`` in degrees). A pixel is *chromatic* when
``S >= 0.2`` and ``V >= 0.2``. Frame-pair quantities use consecutive sampled
frames (1/8 s apart).

Output, in this order (``FEATURES``):

 0. ``motion_mean``    mean over frame pairs of the mean ``|Y_t - Y_{t-1}|``
                       (luma units per 1/8 s)
 1. ``motion_std``     std over frame pairs of that per-pair mean
 2. ``motion_max``     max over frame pairs of that per-pair mean
 3. ``motion_active``  mean over frame pairs of the fraction of pixels with
                       ``|Y_t - Y_{t-1}| > 0.1``
 4. ``cut_rate``       shot cuts per second: pairs whose histogram distance
                       exceeds ``CUT_THRESHOLD`` = 0.4, divided by ``T / 8`` s.
                       Histogram: HSV quantised to 8 hue x 4 saturation x 4
                       value bins (128), normalised; distance = total
                       variation, ``0.5 * sum |p_t - p_{t-1}|``, in [0, 1]
 5. ``hist_diff_mean`` mean over frame pairs of that histogram distance
 6. ``hist_diff_max``  max over frame pairs of that histogram distance
 7. ``brightness``     mean ``V`` over all pixels and frames
 8. ``luma_mean``      mean ``Y`` (lighting key: high-key scenes are bright)
 9. ``luma_contrast``  mean over frames of the spatial std of ``Y``
                       (lighting key: low-key scenes have high contrast)
10. ``luma_flicker``   std over frames of the per-frame mean ``Y``
11. ``dark_fraction``  fraction of pixels with ``Y < 0.25`` (shadow area)
12. ``bright_fraction`` fraction of pixels with ``Y > 0.75``
13. ``saturation_mean`` mean ``S``
14. ``saturation_std`` std of ``S`` over all pixels and frames
15. ``colour_energy``  mean over pixels and frames of ``S * V``. Wang &
                       Cheong additionally weight by hue area and contrast;
                       we do not
16. ``colourfulness``  Hasler & Suesstrunk (2003) colourfulness per frame,
                       ``sqrt(sd_rg^2 + sd_yb^2) + 0.3 sqrt(mu_rg^2 + mu_yb^2)``
                       with ``rg = R - G``, ``yb = (R + G) / 2 - B``; mean over frames
17. ``chromatic_fraction`` fraction of chromatic pixels
18. ``warm_fraction``  among chromatic pixels, the fraction with hue in
                       ``[330, 360) or [0, 75)`` degrees (red, orange,
                       yellow); 0 when there is no chromatic pixel
19. ``cool_fraction``  among chromatic pixels, the fraction with hue in
                       ``[150, 270)`` degrees (cyan, blue); 0 likewise
20. ``hue_cos``        ``sum(w cos h) / sum(w)`` with ``w = S * V``
21. ``hue_sin``        ``sum(w sin h) / sum(w)`` (with ``hue_cos``: the
                       weighted circular mean direction of hue)
22. ``hue_concentration`` ``sqrt(hue_cos^2 + hue_sin^2)`` in [0, 1] (1: one
                       hue; 0: hues spread out). 20-22 are 0 when
                       ``sum(w) = 0`` (a grey video)

Fewer than two frames raise ``ItemError`` (no motion or cut is defined).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from aanbench import hookimpl
from aanbench.contracts import Extractor, ItemError, Media, MediaRequest

FPS = 8.0
SHORT_SIDE = 64
CUT_THRESHOLD = 0.4
MOTION_PIXEL_THRESHOLD = 0.1
CHROMA_S = 0.2
CHROMA_V = 0.2
DARK_Y = 0.25
BRIGHT_Y = 0.75
WARM_HUE = ((330.0, 360.0), (0.0, 75.0))
COOL_HUE = ((150.0, 270.0),)
HIST_BINS = (8, 4, 4)  # hue, saturation, value
BLOCK = 32  # frames processed at once (bounds memory on long items)

FEATURES: tuple[str, ...] = (
    "motion_mean",
    "motion_std",
    "motion_max",
    "motion_active",
    "cut_rate",
    "hist_diff_mean",
    "hist_diff_max",
    "brightness",
    "luma_mean",
    "luma_contrast",
    "luma_flicker",
    "dark_fraction",
    "bright_fraction",
    "saturation_mean",
    "saturation_std",
    "colour_energy",
    "colourfulness",
    "chromatic_fraction",
    "warm_fraction",
    "cool_fraction",
    "hue_cos",
    "hue_sin",
    "hue_concentration",
)


def rgb_to_hsv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``rgb`` float in [0, 1], shape ``(..., 3)`` -> ``(h_degrees, s, v)``,
    each of shape ``(...)``; ``h`` in [0, 360), 0 for grey pixels."""
    return _hsv_planes(rgb[..., 0], rgb[..., 1], rgb[..., 2])


def _hsv_planes(r: np.ndarray, g: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HSV from three same-shaped planes (see :func:`rgb_to_hsv`)."""
    mx = np.maximum(np.maximum(r, g), b)
    mn = np.minimum(np.minimum(r, g), b)
    delta = mx - mn
    v = mx
    s = np.divide(delta, mx, out=np.zeros_like(mx), where=mx > 0)
    inv = np.divide(60.0, delta, out=np.zeros_like(delta), where=delta > 0)
    is_r = mx == r
    is_g = ~is_r & (mx == g)
    is_b = ~is_r & ~is_g
    h = np.empty_like(mx)
    np.multiply(g - b, inv, out=h, where=is_r)
    np.multiply(b - r, inv, out=h, where=is_g)
    np.multiply(r - g, inv, out=h, where=is_b)
    h[is_g] += 120.0
    h[is_b] += 240.0
    h[h < 0.0] += 360.0  # red sector: (g - b) / delta in (-1, 0) -> 300..360 degrees
    h[delta <= 0] = 0.0
    return h, s, v


def _in_ranges(h: np.ndarray, ranges: tuple[tuple[float, float], ...]) -> np.ndarray:
    mask = np.zeros(h.shape, dtype=bool)
    for lo, hi in ranges:
        mask |= (h >= lo) & (h < hi)
    return mask


def _histograms(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Normalised HSV histograms per frame: ``(T, 128)`` from ``(T, H, W)`` planes."""
    nh, ns, nv = HIST_BINS
    hi = np.minimum((h / 360.0 * nh).astype(np.int64), nh - 1)
    si = np.minimum((s * ns).astype(np.int64), ns - 1)
    vi = np.minimum((v * nv).astype(np.int64), nv - 1)
    code = (hi * ns + si) * nv + vi
    t = code.shape[0]
    nbins = nh * ns * nv
    flat = code.reshape(t, -1) + (np.arange(t, dtype=np.int64) * nbins)[:, None]
    counts = np.bincount(flat.ravel(), minlength=t * nbins).reshape(t, nbins)
    return counts / float(code[0].size)


def affect_descriptors(frames: np.ndarray, fps: float = FPS) -> np.ndarray:
    """The 23 descriptors of ``frames`` (``uint8 (T, H, W, 3)`` RGB, ``T >= 2``,
    sampled at ``fps``), as ``float32 (23,)`` in the order of ``FEATURES``."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3), got {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    t_total = frames.shape[0]
    if t_total < 2:
        raise ItemError(f"video too short: {t_total} frame(s) at {fps:g} fps; motion and cuts need at least 2")
    n_pix = frames.shape[1] * frames.shape[2]

    # per-frame quantities
    y_mean = np.empty(t_total)
    y_std = np.empty(t_total)
    colourful = np.empty(t_total)
    # per-pair quantities
    motion = np.empty(t_total - 1)
    active = np.empty(t_total - 1)
    hist_d = np.empty(t_total - 1)
    sums = dict.fromkeys(("v", "s", "s2", "sv", "dark", "bright", "chroma", "warm", "cool", "w", "wcos", "wsin"), 0.0)

    prev_y: np.ndarray | None = None
    prev_hist: np.ndarray | None = None
    for b0 in range(0, t_total, BLOCK):
        # channel planes, each contiguous (T, H, W) float64 in [0, 1]
        x = np.ascontiguousarray(np.moveaxis(frames[b0 : b0 + BLOCK], -1, 0), dtype=np.float64)
        x *= 1.0 / 255.0
        n = x.shape[1]
        r, g, b = x[0], x[1], x[2]
        y = 0.299 * r + 0.587 * g + 0.114 * b
        h, s, v = _hsv_planes(r, g, b)

        y_mean[b0 : b0 + n] = y.mean(axis=(1, 2))
        y_std[b0 : b0 + n] = y.std(axis=(1, 2))
        rg = r - g
        yb = 0.5 * (r + g) - b
        colourful[b0 : b0 + n] = np.sqrt(rg.var(axis=(1, 2)) + yb.var(axis=(1, 2))) + 0.3 * np.sqrt(
            rg.mean(axis=(1, 2)) ** 2 + yb.mean(axis=(1, 2)) ** 2
        )

        # frame differences, continuing across blocks
        ys = y if prev_y is None else np.concatenate([prev_y[None], y])
        d = np.abs(np.diff(ys, axis=0))
        p0 = b0 - 1 if prev_y is not None else 0
        motion[p0 : p0 + d.shape[0]] = d.mean(axis=(1, 2))
        active[p0 : p0 + d.shape[0]] = (d > MOTION_PIXEL_THRESHOLD).mean(axis=(1, 2))
        hist = _histograms(h, s, v)
        hs = hist if prev_hist is None else np.concatenate([prev_hist[None], hist])
        hist_d[p0 : p0 + d.shape[0]] = 0.5 * np.abs(np.diff(hs, axis=0)).sum(axis=1)
        prev_y, prev_hist = y[-1], hist[-1]

        chroma = (s >= CHROMA_S) & (v >= CHROMA_V)
        w = s * v
        rad = np.deg2rad(h)
        sums["v"] += v.sum()
        sums["s"] += s.sum()
        sums["s2"] += (s * s).sum()
        sums["sv"] += w.sum()
        sums["dark"] += np.count_nonzero(y < DARK_Y)
        sums["bright"] += np.count_nonzero(y > BRIGHT_Y)
        sums["chroma"] += np.count_nonzero(chroma)
        sums["warm"] += np.count_nonzero(chroma & _in_ranges(h, WARM_HUE))
        sums["cool"] += np.count_nonzero(chroma & _in_ranges(h, COOL_HUE))
        sums["w"] += w.sum()
        sums["wcos"] += (w * np.cos(rad)).sum()
        sums["wsin"] += (w * np.sin(rad)).sum()

    total = float(t_total * n_pix)
    seconds = t_total / fps
    s_mean = sums["s"] / total
    n_chroma = sums["chroma"]
    if sums["w"] > 0:
        hue_cos, hue_sin = sums["wcos"] / sums["w"], sums["wsin"] / sums["w"]
    else:
        hue_cos = hue_sin = 0.0
    out = [
        motion.mean(),
        motion.std(),
        motion.max(),
        active.mean(),
        np.count_nonzero(hist_d > CUT_THRESHOLD) / seconds,
        hist_d.mean(),
        hist_d.max(),
        sums["v"] / total,
        y_mean.mean(),
        y_std.mean(),
        y_mean.std(),
        sums["dark"] / total,
        sums["bright"] / total,
        s_mean,
        np.sqrt(max(0.0, sums["s2"] / total - s_mean * s_mean)),
        sums["sv"] / total,
        colourful.mean(),
        n_chroma / total,
        sums["warm"] / n_chroma if n_chroma else 0.0,
        sums["cool"] / n_chroma if n_chroma else 0.0,
        hue_cos,
        hue_sin,
        float(np.hypot(hue_cos, hue_sin)),
    ]
    return np.asarray(out, dtype=np.float32)


class AffectDescriptors(Extractor):
    """Weight-free affective video descriptors (Hanjalic & Xu 2005 style), ``float32 (23,)``."""

    name = "affect"
    version = "2"  # 2: frames resized as torchvision does (PIL antialiased bilinear)
    modality = "video"
    dim = len(FEATURES)
    needs = MediaRequest(fps=FPS, short_side=SHORT_SIDE)
    description = (
        "weight-free affective video descriptors: motion intensity, shot-cut rate, "
        "brightness / lighting key, saturation, colour energy, hue (Hanjalic & Xu 2005 style)"
    )
    deterministic = True

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg.update(
            {
                "features": list(FEATURES),
                "luma": "Rec.601 0.299R+0.587G+0.114B",
                "cut_threshold": CUT_THRESHOLD,
                "cut_histogram_bins_hsv": list(HIST_BINS),
                "cut_distance": "total variation 0.5*sum|p-q|",
                "motion_pixel_threshold": MOTION_PIXEL_THRESHOLD,
                "chromatic_min_s": CHROMA_S,
                "chromatic_min_v": CHROMA_V,
                "dark_y": DARK_Y,
                "bright_y": BRIGHT_Y,
                "warm_hue_deg": [list(r) for r in WARM_HUE],
                "cool_hue_deg": [list(r) for r in COOL_HUE],
            }
        )
        return cfg

    def extract(self, batch: Sequence[Media]) -> np.ndarray:
        """``float32 (len(batch), 23)``."""
        out = np.empty((len(batch), self.dim), dtype=np.float32)
        key = self.needs.video_key()
        for i, media in enumerate(batch):
            if key not in media.video:
                raise ItemError("no video stream")
            out[i] = affect_descriptors(media.frames_for(self.needs), fps=FPS)
        return out


@hookimpl
def aanbench_extractors() -> list[Extractor]:
    return [AffectDescriptors()]
