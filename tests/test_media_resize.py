"""Frames are resized as the AttendAffectNet authors' scripts did: PIL's
antialiased bilinear on the decoded RGB frame (``torchvision.transforms.Resize``
on a PIL image), then torchvision's centre crop. Checked against torchvision
itself on a really encoded and decoded clip, at sizes and aspect ratios where
the two resize rules and the crop offsets used to differ."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torchvision.transforms.functional as TF
from PIL import Image

from aanbench.contracts import Item, MediaRequest
from aanbench.media import decode_media
from aanbench.pluginkit.mediawrite import write_clip


def _clip(path: Path, w: int, h: int, n: int = 6) -> Path:
    rng = np.random.default_rng(w * 1000 + h)
    # smooth gradients plus noise: resampling filters differ visibly on such content
    yy, xx = np.mgrid[0:h, 0:w]
    frames = np.empty((n, h, w, 3), dtype=np.uint8)
    for t in range(n):
        base = np.stack([(xx * 255 / w + 20 * t) % 256, (yy * 255 / h) % 256, ((xx + yy) % 64) * 4], -1)
        frames[t] = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
    return write_clip(path, frames, fps=6.0)


def _native_frames(path: Path) -> list[Image.Image]:
    with av.open(str(path)) as c:
        return [f.to_image() for f in c.decode(video=0)]


@pytest.mark.parametrize("w,h,short,crop", [(640, 360, 224, 224), (352, 288, 224, None), (300, 500, 256, 224),
                                            (226, 226, 224, 223)])
def test_resize_and_crop_equal_torchvision_on_pil(tmp_path, w, h, short, crop):
    path = _clip(tmp_path / f"c{w}x{h}.mp4", w, h)
    req = MediaRequest(frames=6, short_side=short, crop=crop)
    got = decode_media(Item(id="c", path=path), [req]).frames_for(req)
    native = _native_frames(path)
    assert len(native) == 6 and got.shape[0] == 6
    for i, img in enumerate(native):
        ref = TF.resize(img, short, interpolation=TF.InterpolationMode.BILINEAR)
        if crop:
            ref = TF.center_crop(ref, crop)
        ref = np.asarray(ref)
        assert got[i].shape == ref.shape, (got[i].shape, ref.shape)
        assert np.array_equal(got[i], ref), f"frame {i}: max diff {np.abs(got[i].astype(int) - ref).max()}"


def test_swscale_resize_would_differ(tmp_path):
    """The check above can fail: swscale's bilinear shrink is not PIL's."""
    path = _clip(tmp_path / "c.mp4", 640, 360)
    with av.open(str(path)) as c:
        frame = next(iter(c.decode(video=0)))
        sws = frame.to_ndarray(width=398, height=224, format="rgb24")
        pil = np.asarray(frame.to_image().resize((398, 224), Image.BILINEAR))
    assert np.abs(sws.astype(int) - pil.astype(int)).mean() > 0.5


def test_native_size_is_kept_without_short_side(tmp_path):
    path = _clip(tmp_path / "n.mp4", 320, 240)
    req = MediaRequest(frames=3)
    got = decode_media(Item(id="n", path=path), [req]).frames_for(req)
    assert got.shape == (3, 240, 320, 3)
