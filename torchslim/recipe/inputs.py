"""A recipe's inputs: its model (by name or saved file) and its data, built from the validated specs.

Stages (a distillation teacher) and the runner both build models here, so neither imports the other.
"""
from __future__ import annotations

from torch import nn

from torchslim.errors import InvalidInputError


def build_model(spec, data_spec=None) -> tuple[nn.Module, tuple[int, int, int]]:
    """A recipe's model (by name or saved file) and its input size (C, H, W)."""
    from torchslim.models import create_model, model_input_size

    if spec.path:
        from torchslim.io import load_model, model_info

        model = load_model(spec.path, code=spec.code)
        size = spec.input_size or model_info(spec.path).get("input_size")
    else:
        model = create_model(spec.name, pretrained=spec.pretrained, weights=spec.weights,
                             num_classes=spec.num_classes, **spec.kwargs)
        size = spec.input_size or model_input_size(spec.name)
    if not size:
        raise InvalidInputError(f"model {spec.path or spec.name}: input size unknown; add `input_size: [C, H, W]`")
    return model, tuple(size)


def load_data(recipe):
    """The data bundle of a validated recipe (`torchslim.recipe.schema.Recipe`)."""
    from torchslim.data import get_data

    d, m = recipe.data, recipe.model
    preprocess = None
    if d.path or d.name.startswith("torchvision:"):  # image files: preprocessed as the model expects
        from torchslim.data.preprocess import preprocess_for

        preprocess = preprocess_for(m.path or m.name, input_size=m.input_size)
    return get_data(d.path or d.name, data_dir=d.data_dir, batch_size=d.batch_size,
                    eval_batch_size=d.eval_batch_size, num_workers=d.workers, seed=recipe.seed, augment=d.augment,
                    download=False, limit_train=d.limit_train, limit_eval=d.limit_eval, preprocess=preprocess,
                    cache=d.cache, skip_bad_images=d.skip_bad_images, protocol=d.protocol)
