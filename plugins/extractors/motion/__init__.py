"""Motion extractors (the sign-language paper's second stream): optical flow, motion history
images and multi-frame differencing, as weight-free descriptors (``descriptors``). The motion
fields and their causal or centred windows are in ``fields``."""

from .descriptors import (
    FlowDescriptor,
    FrameDiffDescriptor,
    MHIDescriptor,
    MotionDescriptor,
)

__all__ = ["FlowDescriptor", "FrameDiffDescriptor", "MHIDescriptor", "MotionDescriptor"]
