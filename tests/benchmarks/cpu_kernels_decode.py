"""Does a decoded, colour-converted and resized demo frame depend on the CPU's
instruction set? (issue 26: numbers moved between machines.)

FFmpeg picks SIMD kernels at run time from the CPU's flags; here they are
masked with libavutil's ``av_force_cpu_flags`` (the library PyAV bundles,
found next to it) before anything is decoded, so one machine can play the
part of an older CPU kind. For each mask this prints a hash of the frames
as ``aanbench.media`` makes them (``frame.to_image()`` = swscale's default
YUV->RGB, then PIL's bilinear resize), and of the frames converted with
swscale's BITEXACT|ACCURATE_RND flags.

    python tests/benchmarks/cpu_kernels_decode.py CLIP.mp4 [mask ...]

masks: ``auto`` (this CPU), ``c`` (no SIMD), ``sse2``, ``ssse3``, ``sse42``,
``avx``, ``avx2``. Each mask runs in a fresh process (FFmpeg chooses kernels
when a context is made; a fresh process makes sure none is reused).
"""

from __future__ import annotations

import ctypes
import glob
import hashlib
import os
import subprocess
import sys

# libavutil/cpu.h (x86)
F = {"mmx": 0x1, "mmxext": 0x2, "sse": 0x8, "sse2": 0x10, "sse3": 0x40, "ssse3": 0x80, "sse4": 0x100,
     "sse42": 0x200, "cmov": 0x1000, "avx": 0x4000, "avx2": 0x8000, "fma3": 0x10000, "bmi1": 0x20000,
     "bmi2": 0x40000, "avx512": 0x100000, "avx512icl": 0x200000}
LEVELS = ["mmx", "mmxext", "cmov", "sse", "sse2", "sse3", "ssse3", "sse4", "sse42", "avx", "fma3", "bmi1", "bmi2",
          "avx2"]


def mask_of(name: str) -> int | None:
    if name == "auto":
        return None
    if name == "c":
        return 0
    upto = LEVELS[: LEVELS.index(name) + 1]
    return sum(F[f] for f in upto)


def force(mask: int | None) -> None:
    import av

    libs = glob.glob(os.path.join(os.path.dirname(av.__file__), os.pardir, "av.libs", "libavutil*"))
    if mask is None:
        return
    lib = ctypes.CDLL(libs[0])  # already loaded by `import av`: the same handle
    lib.av_force_cpu_flags(ctypes.c_int(mask))
    assert lib.av_get_cpu_flags() == mask, (lib.av_get_cpu_flags(), mask)


def frames_hash(path: str, n: int = 48) -> tuple[str, str]:
    import av
    import numpy as np
    from av.video.reformatter import Interpolation
    from PIL import Image

    default, exact = hashlib.sha256(), hashlib.sha256()
    with av.open(path) as c:
        stream = c.streams.video[0]
        stream.thread_type = "SLICE"
        for i, frame in enumerate(c.decode(stream)):
            if i >= n:
                break
            img = frame.to_image()  # what aanbench.media._resized_rgb does
            default.update(np.asarray(img.resize((224, 224), Image.BILINEAR)).tobytes())
            rgb = frame.reformat(format="rgb24",
                                 interpolation=Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.BITEXACT)
            exact.update(np.asarray(rgb.to_image().resize((224, 224), Image.BILINEAR)).tobytes())
    return default.hexdigest()[:16], exact.hexdigest()[:16]


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--one":
        force(mask_of(sys.argv[2]))
        print(*frames_hash(sys.argv[3]))
        sys.exit(0)
    clip = sys.argv[1]
    masks = sys.argv[2:] or ["auto", "avx2", "avx", "sse42", "ssse3", "sse2", "c"]
    print(f"{'mask':>6}  {'default to_image()':>18}  {'BITEXACT|ACCURATE_RND':>21}")
    for m in masks:
        out = subprocess.run([sys.executable, __file__, "--one", m, clip], capture_output=True, text=True, check=True)
        d, e = out.stdout.split()
        print(f"{m:>6}  {d:>18}  {e:>21}")
