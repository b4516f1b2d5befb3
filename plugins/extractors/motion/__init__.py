"""Motion extractors (the sign-language paper's second stream): optical flow, motion history
images and multi-frame differencing, as weight-free descriptors (``descriptors``: ``flow``,
``mhi``, ``framediff``) or as stacked motion images through a CNN backbone file (``images``:
``motion-cnn``). The motion fields and their causal or centred windows are in ``fields``."""

from .descriptors import (
    FlowDescriptor,
    FrameDiffDescriptor,
    MHIDescriptor,
    MotionDescriptor,
)
from .images import MotionCNN

__all__ = ["FlowDescriptor", "FrameDiffDescriptor", "MHIDescriptor", "MotionCNN",
           "MotionDescriptor"]
