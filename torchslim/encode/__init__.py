"""Coding and the compressed model file: CSR with relative indices, Huffman coding, `.slim` files."""
from torchslim.encode.slim_file import FORMAT, READS, VERSION, decode_model, encode_model, load, save, storage_report

__all__ = ["FORMAT", "READS", "VERSION", "decode_model", "encode_model", "load", "save", "storage_report"]
