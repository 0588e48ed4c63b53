"""torchslim: make trained PyTorch CNNs smaller and faster, and measure what was gained and lost.

Public verbs take a model and a config and return a model:
`analyze`, `prune`, `sparsify`, `decompose`, `quantize`, `distill`, `load`, `save`, `export`.
"""
__version__ = "0.1.0"

from torchslim.analysis import profile as analyze  # noqa: E402
from torchslim.prune import prune  # noqa: E402

__all__ = ["analyze", "prune", "__version__"]
