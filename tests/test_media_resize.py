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

from aanbench.contracts import Item, ItemError, MediaRequest
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


_TURN = {0: None, 90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}


@pytest.mark.parametrize("rotation,hflip,vflip", [(90, False, False), (180, False, False), (270, False, False),
                                                  (-90, False, False), (0, True, False), (90, True, False),
                                                  (270, False, True), (0, False, False)])
def test_phone_footage_is_turned_upright_by_its_display_matrix(tmp_path, rotation, hflip, vflip):
    """A phone stores footage shot upright in the sensor's orientation and
    records the turn (counter-clockwise, then any mirror) in the stream's
    display matrix, which players apply. Frames are decoded as a player
    shows them: turned first, then resized and cropped as torchvision does
    it to the upright PIL image (exactly); a bright square drawn top left in
    the upright picture is found there."""
    w, h = 48, 80  # upright: portrait
    upright = np.full((4, h, w, 3), 60, np.uint8)
    upright[:, 4:20, 4:20] = 250
    turn = rotation % 360
    stored = upright[:, ::-1] if vflip else upright  # undo the mirror, then the turn: what the sensor recorded
    stored = stored[:, :, ::-1] if hflip else stored
    stored = np.ascontiguousarray(np.rot90(stored, k=-turn // 90, axes=(1, 2)))
    path = tmp_path / f"phone{rotation}{hflip:d}{vflip:d}.mp4"
    with av.open(str(path), "w") as out:  # write_clip with a mirror as well as a turn
        vs = out.add_stream("libx264", rate=4)
        vs.height, vs.width = stored.shape[1:3]
        vs.pix_fmt, vs.options = "yuv420p", {"crf": "18"}
        if turn or hflip or vflip:
            vs.set_display_rotation(rotation, hflip=hflip, vflip=vflip)
        for i, img in enumerate(stored):
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            vf.pts = i
            out.mux(vs.encode(vf))
        out.mux(vs.encode(None))
    native = _native_frames(path)

    whole = MediaRequest(frames=4)
    got = decode_media(Item(id="p", path=path), [whole]).frames_for(whole)
    assert got.shape == (4, h, w, 3)
    assert got[:, 4:20, 4:20].mean() > 200 and got[:, -20:, -20:].mean() < 100  # the square is top left

    req = MediaRequest(frames=4, short_side=32, crop=30)
    got = decode_media(Item(id="p", path=path), [req]).frames_for(req)
    for i, img in enumerate(native):
        img = img.transpose(_TURN[turn]) if turn else img
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if hflip else img
        img = img.transpose(Image.Transpose.FLIP_TOP_BOTTOM) if vflip else img
        ref = np.asarray(TF.center_crop(TF.resize(img, 32, interpolation=TF.InterpolationMode.BILINEAR), 30))
        assert got[i].shape == ref.shape == (30, 30, 3)
        assert np.array_equal(got[i], ref), f"frame {i}: max diff {np.abs(got[i].astype(int) - ref).max()}"


def test_write_clip_records_a_turn(tmp_path):
    path = write_clip(tmp_path / "turned.mp4", np.full((2, 48, 64, 3), 90, np.uint8), fps=4.0, rotation=-90)
    with av.open(str(path)) as c:
        assert round(next(iter(c.decode(video=0))).rotation) == -90
    req = MediaRequest(frames=2)
    assert decode_media(Item(id="t", path=path), [req]).frames_for(req).shape == (2, 64, 48, 3)


def test_a_turn_that_is_not_a_right_angle_is_refused(tmp_path):
    path = write_clip(tmp_path / "tilted.mp4", np.full((2, 48, 64, 3), 90, np.uint8), fps=4.0, rotation=30)
    with pytest.raises(ItemError, match=r"turns it by (29|30) degrees"):
        decode_media(Item(id="t", path=path), [MediaRequest(frames=2)])
