"""calcnode's DICOM node: network, spool, queues and the service around them."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("calcnode")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0"
