"""The one module-swap helper: by function or by name, in place, the root included."""
import pytest
from torch import nn

from torchslim.errors import InvalidInputError
from torchslim.module_swap import replace_modules


def net():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sequential(nn.ReLU(), nn.Linear(4, 2)))


def test_a_function_swaps_every_module_it_returns_a_replacement_for():
    m = net()
    out = replace_modules(m, lambda mod, fqn: nn.Identity() if isinstance(mod, nn.ReLU) else None)
    assert out is m and isinstance(m[1][0], nn.Identity) and isinstance(m[0], nn.Conv2d)


def test_a_mapping_swaps_by_name_and_the_root_is_returned_when_swapped():
    m = net()
    head = nn.Linear(4, 5)
    assert replace_modules(m, {"1.1": head}) is m and m[1][1] is head
    root = nn.Identity()
    assert replace_modules(m, {"": root}) is root


def test_a_name_that_is_not_in_the_model_is_an_error_naming_it():
    with pytest.raises(InvalidInputError, match="'1.7'"):
        replace_modules(net(), {"1.7": nn.Identity()})
