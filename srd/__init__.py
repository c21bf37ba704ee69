"""srd: a site-reliability daemon for a Substrate live-streaming platform."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("srd")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
