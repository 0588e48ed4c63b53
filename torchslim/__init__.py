"""torchslim: make trained PyTorch CNNs smaller and faster, and measure what was gained and lost.

Public verbs take a model and a config and return a model:
`analyze`, `prune`, `sparsify`, `decompose`, `quantize`, `distill`, `load`, `save`, `export`,
and `compress` runs a whole YAML recipe.

The compression verbs share one shape, `torchslim.<verb>(model, method_or_config, *, data=None,
filter_fn=None, **options)`, and `report_of(model)` gives back what the last one did. Their methods
are one table, `torchslim.methods` (`python -m torchslim.methods`, docs/methods.md).
"""
__version__ = "0.1.0"

# Verbs that share their package's name (torchslim.prune is a package and a function) are bound
# here, after their packages are imported, so the function is what `torchslim.prune` names.
from torchslim.analysis import profile as analyze  # noqa: E402
from torchslim.api import export, load, save  # noqa: E402
from torchslim.distill import distill  # noqa: E402
from torchslim.lowrank import decompose  # noqa: E402
from torchslim.verbs import report_of  # noqa: E402
from torchslim.prune import prune  # noqa: E402
from torchslim.quant import quantize  # noqa: E402
from torchslim.recipe import run_recipe as compress  # noqa: E402
from torchslim.sparsity import sparsify  # noqa: E402

__all__ = ["__version__", "analyze", "compress", "decompose", "distill", "export", "load", "prune", "quantize",
           "report_of", "save", "sparsify"]
