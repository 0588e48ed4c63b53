"""Pickle-free model files: safetensors weights with a JSON architecture manifest in the same file."""
from torchslim.io.model_file import (ARCH_ATTR, load_model, model_info, register_module, save_model, set_arch)

__all__ = ["ARCH_ATTR", "load_model", "model_info", "register_module", "save_model", "set_arch"]
