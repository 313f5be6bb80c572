"""The package version, read by hatchling and by the User-Agent header."""

__version__ = "0.1.0.dev0"
