"""aanbench: plugin-based multimodal feature store and benchmark suite for
movie-evoked emotion (valence and arousal), after AttendAffectNet."""

from aanbench.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["hookimpl", "__version__"]
