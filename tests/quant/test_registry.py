import pytest

from torchslim.errors import UnknownNameError
from torchslim.quant import METHODS, quantize


def test_methods_registered():
    assert set(METHODS.names()) >= {"int8-ptq", "int8-qat", "kmeans", "binary", "ternary"}


def test_unknown_method_and_option_name_what_works():
    from torchslim.errors import InvalidInputError
    from torchslim.models import create_model

    with pytest.raises(UnknownNameError, match="kmeans"):
        quantize(create_model("lenet300"), "fp4")
    with pytest.raises(InvalidInputError, match="bitz"):
        quantize(create_model("lenet300"), "kmeans", bitz=3)
