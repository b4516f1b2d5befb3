"""actrec: online action recognition in untrimmed video.

Importing this package is cheap and has no side effects: no torch, zarr or decord import,
no plugin loading, no global state.
"""

__version__ = "0.1.0"
