"""Example third-party extractor: the mean RGB colour of 4 frames per item."""

import numpy as np

from aanbench import hookimpl
from aanbench.contracts import Extractor, MediaRequest


class MeanColour(Extractor):
    name = "example-colour"
    version = "1"
    modality = "video"
    dim = 3
    needs = MediaRequest(frames=4, short_side=32)
    description = "Mean R, G, B of 4 uniformly sampled frames, in [0, 255]"

    def extract(self, batch):
        return np.stack([m.frames_for(self.needs).reshape(-1, 3).mean(axis=0) for m in batch]).astype(np.float32)


@hookimpl
def aanbench_extractors():
    return [MeanColour()]
