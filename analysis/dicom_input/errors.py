"""The typed errors of the input layer.

Every problem with an input object is raised as one of these, with a message
that says what is wrong and why it matters, so a command-line user or the node's
log sees a sentence rather than a traceback.
"""


class InputError(ValueError):
    """An input DICOM object that cannot be used.

    ``reason`` is a short machine-readable code (for logs, reports and tests);
    ``str(error)`` is the human sentence.
    """

    def __init__(self, message: str, *, reason: str, source: str | None = None):
        super().__init__(message)
        self.reason = reason
        self.source = source

    def __str__(self) -> str:
        message = super().__str__()
        return f"{self.source}: {message}" if self.source else message


class UnusableImageError(InputError):
    """An object that is not a mammogram this node can analyse."""


class RoiError(InputError):
    """A region of interest (GSPS annotation or SEG segment) that cannot be used."""
