"""Size on disk of a model's weights, measured by writing them."""
from __future__ import annotations

import os
import tempfile

from torch import nn


def saved_size_bytes(model: nn.Module) -> int:
    """Bytes of the model's state dict saved as safetensors (no compression, no pickle)."""
    from safetensors.torch import save_file

    sd = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "w.safetensors")
        save_file(sd, path)
        return os.path.getsize(path)
