"""Published weights of library models (`torchvision:<name> --pretrained`): the torch hub cache first.

A file already in the cache loads without the network; a missing one is downloaded where downloads are
allowed (not under TORCHSLIM_NO_DOWNLOAD=1, as in the tests), else one line names the cache path and
`--weights`.
"""
from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from torchslim.errors import InvalidInputError, UnknownNameError


def hub_cache_file(url: str) -> Path:
    """Where torch.hub keeps (and torchvision looks for) the file of `url`: $TORCH_HOME/hub/checkpoints."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def check_published(tv_name: str):
    """The default published weights of torchvision's `tv_name`, failing early (one line) when they are not
    in the hub cache and downloads are off."""
    import torchvision

    if tv_name not in torchvision.models.list_models(module=torchvision.models):
        raise UnknownNameError(f"unknown torchvision model {tv_name!r}; see `torchslim models 'torchvision:*'`")
    try:
        weights = torchvision.models.get_model_weights(tv_name).DEFAULT
    except Exception:
        raise InvalidInputError(f"torchvision:{tv_name} has no published weights; pass --weights FILE") from None
    path = hub_cache_file(weights.url)
    if not path.is_file() and os.environ.get("TORCHSLIM_NO_DOWNLOAD") == "1":
        raise InvalidInputError(f"torchvision:{tv_name} --pretrained: {weights} is not in the torch hub cache "
                                f"({path}) and downloads are off; put the file there, or pass --weights FILE")
    return weights


def torchvision_pretrained(tv_name: str, **kwargs) -> nn.Module:
    """torchvision's `tv_name` with its default published weights, read from the hub cache."""
    import torchvision

    weights = check_published(tv_name)
    path = hub_cache_file(weights.url)
    try:  # torchvision's own builder: remaps old key names, and downloads only when the file is missing
        return torchvision.models.get_model(tv_name, weights=weights, **kwargs)
    except Exception as e:
        why = f"{type(e).__name__}: {e}".splitlines()[0]
        raise InvalidInputError(f"torchvision:{tv_name} --pretrained: {weights} could not be loaded from the torch "
                                f"hub cache ({path}) or downloaded ({why}); put the file there, or pass "
                                "--weights FILE") from None
