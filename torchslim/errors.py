"""Exception types. Every message names the offending layer, file or value and says what would work.

The CLI turns any `TorchslimError` into one line on stderr and exit code 2.
"""


class TorchslimError(Exception):
    """Base class of torchslim's own errors: bad input a user can fix."""


class UnknownNameError(TorchslimError, KeyError):
    """A name (model, dataset, criterion, method...) is not in its registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DataNotFoundError(TorchslimError, FileNotFoundError):
    """Data files are missing; the message says where to put which files."""


class InvalidInputError(TorchslimError, ValueError):
    """A value (input size, ratio, rank, file content...) is out of range or malformed."""


class UnsupportedModelError(TorchslimError):
    """A model or operation cannot be handled; the message names the module and op."""


class FileFormatError(TorchslimError, ValueError):
    """A model file is truncated, corrupted, of a wrong version or not a torchslim file."""


class MissingDependencyError(TorchslimError, ImportError):
    """An optional package is needed; the message names the pip extra that installs it."""
