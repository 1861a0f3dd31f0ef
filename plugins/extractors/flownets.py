"""FlowNetS encoder (Flying Chairs) motion features, as in AttendAffectNet
section III-A.

The network is FlowNetS without batch normalisation as in
ClementPinard/FlowNetPytorch (our own module with the same parameter names:
``conv1.0.weight`` ... ``conv6_1.0.bias``, ``deconv5.0.weight`` ...,
``predict_flow6.weight`` ..., ``upsampled_flow6_to_5.weight`` ...). The
whole network is loaded with ``strict=True`` from the file's
``state_dict``; only the contracting part runs: ``conv1`` ... ``conv6_1``,
each a convolution (padding ``(k - 1) // 2``) followed by LeakyReLU(0.1).

Input and feature, recipe ``authors`` (the default), as the AttendAffectNet
authors' ``Model/FlowNetS/feature_extraction_FlowNetS.py`` computed them
(see ``AUTHORS_PIPELINE.md``): frames at their native size (no resize, no
crop); two consecutive sampled frames stacked on channels (the first
frame's RGB, then the second's: 6 channels), each scaled to [0, 1] minus
(0.411, 0.432, 0.45) in R, G, B order (FlowNetPytorch's inference script);
the network's first nine children, ``conv1`` ... ``conv6`` (``conv6_1`` is
not run); each pair's 1024 channels averaged over space; with T sampled
frames the T - 1 pair vectors plus the last pair's vector once more, i.e.
the mean of T vectors in which the last pair counts twice.

Recipe ``training`` (registered as ``flownets-training``): the transform
FlowNetPytorch's training script applies (mean (0.45, 0.432, 0.411) in R,
G, B order), ``conv6_1`` as the feature layer, the plain mean over the T - 1
pairs, on the 256-short-side, 224 x 224 centre-cropped frames ResNet-50 and
I3D can share. The flow scale (``div_flow`` = 20) divides the flow targets,
not the images, so it touches neither.

When T equals the number of video frames in the window (all 125 frames of a
5-s COGNIMUSE segment at 25 fps) the pairs are adjacent video frames, as in
the paper; with fewer frames (64 per EIMT16 excerpt) they are evenly spaced
frames ``duration / T`` seconds apart.

Weights: ``flownets_EPE1.951.pth`` as stored (Git LFS) in the
FlowNetPytorch repository; its SHA-256 is the LFS object id. The README's
Google Drive folder offers ``flownets_EPE1.951.pth.tar``; whether those bytes
are identical is not known here: ``aanbench weights add`` matches a file by
its SHA-256, so that download is accepted (under the official name) exactly
when it is the same file. ``flownets_from_caffe.pth`` (the original authors'
Caffe weights, which expect BGR input) is a different file and is not
accepted.

Importing this module does not import torch (every CLI call loads all
plugins): the network (``FlowNetS``) and the input helpers (``pair_inputs``,
``frame_pairs``) live in :mod:`aanbench_plugins.extractors._flownets_net`, imported when
the extractor loads .
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from aanbench import hookimpl
from aanbench.contracts import AanbenchError, Media, WeightFile
from aanbench_plugins.extractors._neural import NeuralExtractor

if TYPE_CHECKING:
    import torch
    from torch import nn

WEIGHTS = WeightFile(
    filename="flownets_EPE1.951.pth",
    sha256="d98505dc749c35f0d4b4ce0536b4f64797ec22ea194a5f743af97dc3f778447d",
    source="https://github.com/ClementPinard/FlowNetPytorch/tree/master/weights",
    description="FlowNetS without batch norm, Flying Chairs, EPE 1.951 (ClementPinard/FlowNetPytorch, "
    "Git LFS file weights/flownets_EPE1.951.pth); 154,706,509 bytes",
)

# per-channel means subtracted after scaling to [0, 1], in R, G, B order:
# FlowNetPytorch's training transform, and its inference script's order (the
# one the AttendAffectNet authors' extraction script used)
FLOW_MEAN_RGB = (0.45, 0.432, 0.411)
AUTHORS_MEAN_RGB = (0.411, 0.432, 0.45)


class FlowNetSExtractor(NeuralExtractor):
    name = "flownets"
    version = "2"  # 2: authors' recipe (native size, conv6, last pair twice) by default
    modality = "video"
    dim = 1024
    description = "FlowNetS (Flying Chairs) encoder features of consecutive frame pairs, averaged"
    weight_file = WEIGHTS
    # frame pairs per pass; on a 2-core CPU 4-8 per pass ran 7x faster than 1, 16 slower than 8
    max_inputs_per_pass = {"cpu": 8, "cuda": 128}
    recipes = {
        "authors": {"short_side": None, "crop": None, "mean_rgb": AUTHORS_MEAN_RGB, "layer": "conv6",
                    "last_pair_twice": True},
        "training": {"short_side": 256, "crop": 224, "mean_rgb": FLOW_MEAN_RGB, "layer": "conv6_1",
                     "last_pair_twice": False},
    }

    def min_frames(self) -> int:
        return 2

    def preprocessing(self) -> dict[str, Any]:
        st = self.settings
        return {"scale": "x/255", "mean_rgb": list(st["mean_rgb"]), "pairs": "consecutive sampled frames",
                "layer": st["layer"],
                "pool": "mean over space, then over pairs" + (" (last pair counted twice)" if st["last_pair_twice"] else "")}

    def build(self) -> nn.Module:
        from aanbench_plugins.extractors._flownets_net import FlowNetS

        return FlowNetS()

    def state_dict_from(self, obj: Any, net: nn.Module) -> Mapping[str, torch.Tensor]:
        if isinstance(obj, Mapping) and "state_dict" in obj:
            arch = obj.get("arch")
            if arch is not None and arch != "flownets":
                raise AanbenchError(f"{self.name}: the weight file holds architecture {arch!r}, not 'flownets'")
            return obj["state_dict"]
        return obj

    def extract_group(self, group: Sequence[Media]) -> np.ndarray:
        import torch

        from aanbench_plugins.extractors._flownets_net import pair_inputs
        from aanbench_plugins.extractors._torch_util import frames_tensor, mean_by_item, run_in_passes

        net = self._require_loaded()
        clips = self.frames_of(group)
        counts = [c.shape[0] - 1 for c in clips]
        layer, mean_rgb, twice = self.settings["layer"], tuple(self.settings["mean_rgb"]), self.settings["last_pair_twice"]

        def fn(x: torch.Tensor) -> torch.Tensor:
            return net.encode(x, upto=layer).mean(dim=(2, 3))  # type: ignore[operator]

        def run(cs: list[np.ndarray]) -> torch.Tensor:
            u8 = frames_tensor(cs)
            # index of each pair's first frame in the concatenated frames (never an item's last frame)
            starts = np.concatenate([np.arange(c.shape[0] - 1) + off
                                     for c, off in zip(cs, np.cumsum([0] + [c.shape[0] for c in cs[:-1]]))])
            first = torch.from_numpy(starts)

            def make(sl: slice, dev: torch.device) -> torch.Tensor:
                return pair_inputs(u8[first[sl]].to(dev), u8[first[sl] + 1].to(dev), mean_rgb)

            return run_in_passes(len(starts), make, fn, self.per_pass(), self.device)

        if len({c.shape[1:] for c in clips}) == 1:
            per = run(clips)
        else:  # frames of different sizes (no crop asked): one item at a time
            per = torch.cat([run([c]) for c in clips])
        if twice:  # the authors append the last pair's vector once more before averaging
            rows, start = [], 0
            for c in counts:
                block = per[start : start + c].double()
                rows.append((block.sum(dim=0) + block[-1]) / (c + 1))
                start += c
            return torch.stack(rows).float().numpy()
        return mean_by_item(per, counts)


@hookimpl
def aanbench_extractors():
    return [FlowNetSExtractor(), FlowNetSExtractor(recipe="training")]
