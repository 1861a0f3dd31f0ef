"""ResNet-50 (ImageNet) frame features, as in AttendAffectNet section III-A.

Each sampled frame goes through torchvision's ResNet-50 with the official
ImageNet weights (``IMAGENET1K_V1``, the file ``resnet50-0676ba61.pth``);
the 2048 outputs of the global average pool (after the last ReLU, so never
negative) are averaged over the item's frames.

Preprocessing (recipe ``authors``, the default) is the AttendAffectNet
authors' script (``Model/ResNet50/*``, see ``AUTHORS_PIPELINE.md``):
shorter side resized to 224 pixels with PIL's antialiased bilinear, centre
crop 224 x 224 (both done by the decoder: ``MediaRequest(short_side=224,
crop=224)``), RGB scaled to [0, 1] and normalised with the ImageNet mean
(0.485, 0.456, 0.406) and standard deviation (0.229, 0.224, 0.225); the
network in evaluation mode (batch norm with its running statistics).
Recipe ``torchvision`` (registered as ``resnet50-torchvision``) is
torchvision's own evaluation transform for these weights: shorter side 256,
centre crop 224.

Importing this module does not import torch or torchvision (every CLI call
loads all plugins); they come in with :mod:`aanbench_plugins.extractors._resnet50_net`
when the extractor loads. ``normalise`` and ``normalise_frames`` live there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from aanbench import hookimpl
from aanbench.contracts import Media, WeightFile
from aanbench_plugins.extractors._neural import NeuralExtractor

if TYPE_CHECKING:
    import torch
    from torch import nn

# The 8 hex digits in torchvision's file names are the SHA-256 prefix; the
# full digest is recorded here. (resnet50-19c8e357.pth, the same weights in
# the older serialisation, and the V2 weights resnet50-11ad3fa6.pth are other
# files: not accepted.)
WEIGHTS = WeightFile(
    filename="resnet50-0676ba61.pth",
    sha256="0676ba61b6795bbe1773cffd859882e5e297624d384b6993f7c9e683e722fb8a",
    source="https://download.pytorch.org/models/resnet50-0676ba61.pth",
    description="torchvision ResNet-50, ImageNet-1k V1 weights (ResNet50_Weights.IMAGENET1K_V1), state dict",
)


class ResNet50Extractor(NeuralExtractor):
    name = "resnet50"
    version = "2"  # 2: authors' recipe (short side 224) by default, PIL resize
    modality = "video"
    dim = 2048
    description = "ResNet-50 (ImageNet) global-average-pool features, averaged over frames"
    weight_file = WEIGHTS
    # frames per pass; on a 2-core CPU 8 ran faster than 16 (cache), see tests/benchmarks
    max_inputs_per_pass = {"cpu": 8, "cuda": 256}
    recipes = {"authors": {"short_side": 224, "crop": 224}, "torchvision": {"short_side": 256, "crop": 224}}

    def preprocessing(self) -> dict[str, Any]:
        from aanbench_plugins.extractors._resnet50_net import IMAGENET_MEAN, IMAGENET_STD  # (imports torch)

        return {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "layer": "avgpool", "pool": "mean over frames"}

    def build(self) -> nn.Module:
        import torchvision

        return torchvision.models.resnet50(weights=None)

    def load(self, ctx) -> None:  # type: ignore[override]
        from torch import nn

        super().load(ctx)
        # the classifier is loaded (strict) but not used: features stop at the pool
        self.net.fc = nn.Identity()  # type: ignore[union-attr]

    def extract_group(self, group: Sequence[Media]) -> np.ndarray:
        import torch

        from aanbench_plugins.extractors._resnet50_net import normalise
        from aanbench_plugins.extractors._torch_util import frames_tensor, mean_by_item, run_in_passes

        net = self._require_loaded()
        clips = self.frames_of(group)
        counts = [c.shape[0] for c in clips]

        def run(u8: torch.Tensor) -> torch.Tensor:
            return run_in_passes(u8.shape[0], lambda sl, dev: normalise(u8[sl].to(dev)), net,
                                 self.per_pass(), self.device)

        if len({c.shape[1:] for c in clips}) == 1:
            per = run(frames_tensor(clips))
        else:  # frames of different sizes (no crop asked): one item at a time
            per = torch.cat([run(frames_tensor([c])) for c in clips])
        return mean_by_item(per, counts)


@hookimpl
def aanbench_extractors():
    return [ResNet50Extractor(), ResNet50Extractor(recipe="torchvision")]
