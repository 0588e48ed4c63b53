"""Efficient building blocks (MobileNet, ResNeXt, ShuffleNet) and conversion of a trained model to them."""
from torchslim.blocks.convert import ConvertConfig, reconstruct, separable_from_conv, to_separable
from torchslim.blocks.depthwise import DepthwiseSeparableConv, scale_channels
from torchslim.blocks.resnext import ResNeXtBlock
from torchslim.blocks.shuffle import ChannelShuffle, ShuffleUnit

__all__ = ["ChannelShuffle", "ConvertConfig", "DepthwiseSeparableConv", "ResNeXtBlock", "ShuffleUnit",
           "reconstruct", "scale_channels", "separable_from_conv", "to_separable"]
