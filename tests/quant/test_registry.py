import pytest

from torchslim.errors import UnknownNameError
from torchslim.quant import METHODS, quantize


def test_methods_registered():
    assert set(METHODS.names()) >= {"int8", "int8-ptq", "int8-qat", "kmeans", "binary", "ternary"}


def test_recipe_spelling_of_kmeans_bits():
    from torchslim.models import create_model
    from torchslim.quant import SharedWeightConv2d, SharedWeightLinear

    q = quantize(create_model("lenet5"), "kmeans", conv_bits=6, fc_bits=3, epochs=0)
    assert {m.bits for m in q.modules() if isinstance(m, SharedWeightConv2d)} == {6}
    assert {m.bits for m in q.modules() if isinstance(m, SharedWeightLinear)} == {3}


def test_unknown_method_and_option_name_what_works():
    from torchslim.errors import InvalidInputError
    from torchslim.models import create_model

    with pytest.raises(UnknownNameError, match="kmeans"):
        quantize(create_model("lenet300"), "fp4")
    with pytest.raises(InvalidInputError, match="bitz"):
        quantize(create_model("lenet300"), "kmeans", bitz=3)
