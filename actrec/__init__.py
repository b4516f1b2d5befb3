"""actrec: online action recognition in untrimmed video.

Importing this package is cheap and has no side effects: no torch, zarr or decord import,
no plugin loading, no global state.
"""

__version__ = "0.1.0"

__all__ = ["Prediction", "Recognizer", "__version__"]

_LAZY = {"Recognizer": "actrec.recognizer", "Prediction": "actrec.recognizer"}


def __getattr__(name: str):
    """``actrec.Recognizer`` (live recognition, ``actrec.recognizer``), imported on first use
    so that ``import actrec`` stays cheap."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'actrec' has no attribute {name!r}")
