"""Per-frame motion fields and the sliding windows over them, causal or centred.

A motion *field* ``e_t`` is what changed between frame ``t-1`` and frame ``t`` (both grey and
resized, see ``grey_frames``): Farneback optical flow ``[H, W, 2]`` (pixels of the resized
frame per frame, x right, y down), or the absolute grey difference ``[H, W]`` (0..255). A *window* of
``w`` frames ending at frame ``t`` holds the ``w - 1`` fields ``e_{t-w+2} .. e_t`` (oldest
first), and every motion feature of frame ``t`` is a function of one window.

Ends of a video: frames before the first are copies of the first and frames after the last are
copies of the last, so the fields there are zero (set exactly, not estimated: Farneback of two
identical images is not guaranteed to be exactly zero).

Causal (default): frame ``t``'s window ends at ``t``: only past frames. Centred: frame ``t``'s
window ends at ``t + k`` with ``k = w // 2`` (the window ``t-k .. t+k`` for odd ``w``), so that
centred feature ``t`` equals causal feature ``t + k`` wherever ``t + k`` is inside the video:
the extractor's ``lookahead`` is ``k``. ``sliding_windows`` keeps the last ``w - 2`` fields and
the last frame between batches, so nothing depends on how frames are batched.

A window counts frames as the extractor is fed them: at the dataset's label rate unless the
extractor's ``fps`` says otherwise (Signing in the Wild: 5 Hz, so 5 frames span 1 s), or, with
``window_rate=video``, at the video's own rate as Borg & Camilleri take them (5 frames of a
25 fps video span 0.2 s); the host then keeps one row per label frame and records the
look-ahead in label frames (``actrec.extract_video``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np

__all__ = [
    "FIELD_KINDS",
    "FLOW_PARAMS",
    "WINDOW_RATES",
    "check_window_rate",
    "diff_fields",
    "difference_mean",
    "difference_total",
    "flow_fields",
    "grey_frames",
    "history_levels",
    "mean_difference",
    "motion_history",
    "recency",
    "resized_shape",
    "sliding_windows",
    "window_slices",
]

# Farneback's parameters (pyramid scale, levels, window size, iterations, polynomial size and
# sigma): three levels and a 9-pixel window suit the small frames (64-224 px) used here.
FLOW_PARAMS = (0.5, 3, 9, 3, 5, 1.1, 0)
FIELD_KINDS = ("flow", "diff")
WINDOW_RATES = ("labels", "video")


def check_window_rate(config, where: str) -> None:
    """``ConfigError`` naming ``where`` unless ``config.window_rate`` is one of
    ``WINDOW_RATES`` and, when ``video``, no ``fps`` is set (rows are kept per label frame)."""
    from actrec.errors import ConfigError

    if config.window_rate not in WINDOW_RATES:
        raise ConfigError(f"option 'window_rate' for {where} must be one of "
                          f"{', '.join(WINDOW_RATES)} (the frames a window counts), got "
                          f"{config.window_rate!r}")
    if config.window_rate == "video" and config.fps is not None:
        raise ConfigError(f"{where}: options 'window_rate=video' and 'fps' exclude each other "
                          f"(window_rate=video reads the video at its own rate and keeps a row "
                          f"per label frame; fps={config.fps:g} resamples and keeps every row)")


def resized_shape(height: int, width: int, size: int, keep_aspect: bool) -> tuple[int, int]:
    """``(h, w)`` of a ``height`` x ``width`` frame resized for motion: the shorter side to
    ``size`` and the longer in proportion (``keep_aspect``: directions stay true), else
    ``size`` x ``size``."""
    if not keep_aspect:
        return size, size
    if height <= width:
        return size, max(size, round(width * size / height))
    return max(size, round(height * size / width)), size


def grey_frames(frames: np.ndarray, size: int, keep_aspect: bool = True) -> np.ndarray:
    """uint8 RGB ``[B, H, W, 3]`` -> uint8 grey ``[B, h, w]`` of ``resized_shape`` (OpenCV's
    luma weights, area interpolation)."""
    import cv2

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[3] != 3:
        raise ValueError(f"motion extractors expect frames [B, H, W, 3], got {frames.shape}")
    b, height, width = frames.shape[:3]
    h, w = resized_shape(height, width, size, keep_aspect)
    if b == 0:
        return np.empty((0, h, w), dtype=np.uint8)
    # One call per batch, frames stacked one above the other: the colour conversion is per
    # pixel, and an area resize by whole multiples averages blocks that never straddle two
    # frames, so every frame comes out exactly as converted and resized alone.
    tall = np.ascontiguousarray(frames, dtype=np.uint8).reshape(b * height, width, 3)
    grey = cv2.cvtColor(tall, cv2.COLOR_RGB2GRAY)
    if (height, width) == (h, w):
        return grey.reshape(b, h, w)
    if height % h == 0 and width % w == 0:
        return cv2.resize(grey, (w, b * h), interpolation=cv2.INTER_AREA).reshape(b, h, w)
    grey = grey.reshape(b, height, width)
    out = np.empty((b, h, w), dtype=np.uint8)
    for i, frame in enumerate(grey):
        out[i] = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
    return out


def flow_fields(prev: np.ndarray, grey: np.ndarray) -> np.ndarray:
    """Farneback flow from each frame to the next: ``prev`` ``[H, W]`` then ``grey``
    ``[B, H, W]`` uint8 -> float32 ``[B, H, W, 2]`` (field ``b`` is from frame ``b-1``, the
    first from ``prev``)."""
    import cv2

    out = np.empty((*grey.shape, 2), dtype=np.float32)
    before = prev
    for i, frame in enumerate(grey):
        out[i] = cv2.calcOpticalFlowFarneback(before, frame, None, *FLOW_PARAMS)
        before = frame
    return out


def diff_fields(prev: np.ndarray, grey: np.ndarray) -> np.ndarray:
    """Absolute grey differences of consecutive frames, float32 ``[B, H, W]`` in 0..255."""
    import cv2

    b, h, w = grey.shape
    if b == 0 or h == 0 or w == 0:
        return np.zeros(grey.shape, np.float32)
    # |a - b| of bytes is exact in a byte: OpenCV's vectorised absdiff, one call for the
    # first frame against ``prev`` and one for the others stacked
    out = np.empty(grey.shape, np.uint8)
    cv2.absdiff(grey[0], prev, dst=out[0])
    if b > 1:
        cv2.absdiff(grey[1:].reshape(-1, w), grey[:-1].reshape(-1, w),
                    dst=out[1:].reshape(-1, w))
    return out.astype(np.float32)


def window_slices(fields: np.ndarray, window: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(j, fields[j : j + B])`` for the ``window - 1`` positions of a window, oldest ``j = 0``
    first: slice ``j`` holds field ``j`` of each of the ``B`` windows in ``fields``."""
    b = fields.shape[0] - (window - 2)
    for j in range(window - 1):
        yield j, fields[j:j + b]


def motion_history(fields: np.ndarray, window: int, threshold: float) -> np.ndarray:
    """The motion history image of each window of difference fields, float32 ``[B, H, W]`` in
    0..1: a pixel whose grey level changed by more than ``threshold`` in the ``j``-th pair of
    the window (oldest ``j = 0``) holds ``(j + 1) / (window - 1)`` for its latest change (so
    the newest change is 1), and 0 where nothing changed."""
    return history_levels(window)[recency(fields, window, threshold)]


def history_levels(window: int) -> np.ndarray:
    """The motion history image's value for each ``recency`` (float32 ``[window]``): 0 for
    none, ``(j + 1) / (window - 1)`` for ``j + 1``."""
    w1 = window - 1
    return np.array([0.0] + [np.float32((j + 1) / w1) for j in range(w1)], dtype=np.float32)


def recency(fields: np.ndarray, window: int, threshold: float) -> np.ndarray:
    """Per pixel of each window of difference fields, uint8 ``[B, H, W]``: ``j + 1`` for the
    newest pair ``j`` of the window (oldest ``j = 0``) whose grey level changed by more than
    ``threshold``, 0 where none did (``history_levels`` maps it to the MHI's value; kept as a
    small integer, the MHI and everything computed from its values per pixel are table
    look-ups)."""
    newest = None
    for j, diff in window_slices(fields, window):  # oldest first: newer changes overwrite
        changed = np.greater(diff, threshold).view(np.uint8)  # 0 or 1
        if newest is None:
            newest = changed * np.uint8(j + 1)
        else:
            np.maximum(newest, changed * np.uint8(j + 1), out=newest)
    return newest


def mean_difference(fields: np.ndarray, window: int) -> np.ndarray:
    """Multi-frame differencing: the mean absolute difference of each window's ``window - 1``
    frame pairs, float32 ``[B, H, W]`` in 0..1."""
    return difference_mean(difference_total(fields, window), window)


def difference_total(fields: np.ndarray, window: int) -> np.ndarray:
    """The sum of each window's ``window - 1`` absolute differences, float32 ``[B, H, W]``:
    whole grey levels ``0 .. (window - 1) * 255``, exact in float32."""
    return sum(d for _, d in window_slices(fields, window))


def difference_mean(total: np.ndarray, window: int) -> np.ndarray:
    """``difference_total`` as the mean over the window's pairs, / 255, float32."""
    return (total / ((window - 1) * 255.0)).astype(np.float32)


def sliding_windows(
    batches: Iterable[np.ndarray],
    *,
    kind: str,
    window: int,
    size: int,
    centred: bool,
    compute: Callable[[np.ndarray], np.ndarray],
    keep_aspect: bool = True,
    chunk: int | None = None,
) -> Iterator[np.ndarray]:
    """``compute(fields)`` per batch, where ``fields`` ``[w - 2 + B, ...]`` holds the fields of
    ``B`` consecutive windows (window ``i`` is ``fields[i : i + w - 1]``) and ``compute`` returns
    one row per window, ``[B, D]``. ``chunk`` splits each batch into parts of at most that
    many frames, computed one after the other (their rows are yielded together): small parts
    keep a weight-free computation's temporaries in the CPU caches; the rows do not change.

    Consumes RGB frame batches in time order and yields, in total, exactly one row per frame
    (see the module docstring for which window each frame gets). ``kind`` is ``"flow"`` or
    ``"diff"``.
    """
    if kind not in FIELD_KINDS:
        raise ValueError(f"field kind must be one of {FIELD_KINDS}, got {kind!r}")
    if window < 2:
        raise ValueError(f"a motion window spans at least 2 frames, got {window}")
    make = flow_fields if kind == "flow" else diff_fields
    lookahead = window // 2 if centred else 0
    to_drop = lookahead  # the first windows end before frame `lookahead`: nobody's window
    last: np.ndarray | None = None  # last grey frame seen, [H, W] uint8
    kept: np.ndarray | None = None  # the last w - 2 fields, [w - 2, H, W(, 2)]

    def emit(new: np.ndarray) -> np.ndarray | None:
        nonlocal kept, to_drop
        fields = np.concatenate([kept, new])  # [w - 2 + B, ...]
        kept = fields[fields.shape[0] - (window - 2):]
        rows = compute(fields)  # [B, D]
        drop = min(to_drop, rows.shape[0])
        to_drop -= drop
        return rows[drop:] if rows.shape[0] > drop else None

    def step(batch: np.ndarray) -> Iterator[np.ndarray]:
        """The rows of one batch (none yet while a centred window waits for its end)."""
        nonlocal last, kept
        grey = grey_frames(batch, size, keep_aspect)
        if grey.shape[0] == 0:
            return
        first = last is None
        if first:
            last = grey[0]  # the frame before the first is a copy of it: a zero field
            shape = (window - 2, *grey.shape[1:]) + ((2,) if kind == "flow" else ())
            kept = np.zeros(shape, dtype=np.float32)
        new = make(last, grey)
        if first:
            new[0] = 0.0
        last = grey[-1]
        rows = emit(new)
        if rows is not None:
            yield rows

    for whole in batches:
        parts = [whole] if chunk is None or len(whole) <= chunk else \
            [whole[i:i + chunk] for i in range(0, len(whole), chunk)]
        out = [rows for part in parts for rows in step(part)]
        if out:
            yield out[0] if len(out) == 1 else np.concatenate(out)
    if last is not None and lookahead:
        # The frames after the last are copies of it: zero fields, exactly.
        tail = np.zeros((lookahead, *kept.shape[1:]), dtype=np.float32)
        rows = emit(tail)
        if rows is not None:
            yield rows
