"""prunebench: compare neural-network pruners under one shared training budget."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("prunebench")
except PackageNotFoundError:  # a source tree that was not installed
    __version__ = "0+unknown"
