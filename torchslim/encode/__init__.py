"""Coding and the compressed model file: CSR with relative indices, Huffman coding, `.slim` files."""
from dataclasses import dataclass

from torchslim.encode.slim_file import FORMAT, READS, VERSION, decode_model, encode_model, load, save, storage_report



@dataclass
class EncodeConfig:
    """Options of the coded model file (`save`), as a recipe's encode stage gives them.

    Args:
        file: the file name in the stage folder.
        metadata: extra JSON-able figures stored in the header.
        input_size: (C, H, W) recorded for `load` (default: the model's own record).
    """

    file: str = "model.slim"
    metadata: dict | None = None
    input_size: tuple | None = None


__all__ = ["EncodeConfig", "FORMAT", "READS", "VERSION", "decode_model", "encode_model", "load", "save", "storage_report"]
