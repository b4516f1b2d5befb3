"""What happens in a synthetic kitchen: action styles, kitchen vocabularies, and the recipe
grammar (a Markov chain over actions with per-action duration distributions).

Everything random takes a ``numpy.random.Generator``; the grammar itself is a fixed property
of the kitchen, not of the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ActionStyle", "KitchenStyle", "ACTIONS", "KITCHENS", "Grammar", "grammar",
           "Segment", "sample_timeline"]


@dataclass(frozen=True)
class ActionStyle:
    """How an action looks: blob colour (RGB), motion pattern, tool angle, motion period and
    mean duration (seconds). Pairs of actions share colour and tool and differ only in motion,
    so one frame cannot tell them apart."""

    colour: tuple[int, int, int]
    motion: str  # "left-right" | "up-down" | "circle" | "diagonal" | "pulse"
    tool_angle: float  # degrees
    period: float  # seconds per motion cycle
    duration: float  # mean seconds


_RED, _YELLOW, _BLUE, _ORANGE, _GREEN = (200, 60, 50), (210, 190, 60), (60, 110, 210), \
    (220, 130, 40), (80, 180, 80)

ACTIONS: dict[str, ActionStyle] = {
    "cut": ActionStyle(_RED, "left-right", 30.0, 0.8, 3.0),
    "peel": ActionStyle(_RED, "up-down", 30.0, 0.9, 3.5),
    "stir": ActionStyle(_YELLOW, "circle", 100.0, 1.2, 3.5),
    "blend": ActionStyle(_YELLOW, "pulse", 100.0, 0.7, 2.5),
    "pour": ActionStyle(_BLUE, "diagonal", 150.0, 1.5, 2.5),
    "wash": ActionStyle(_BLUE, "left-right", 150.0, 0.7, 3.0),
    "fry": ActionStyle(_ORANGE, "pulse", 60.0, 1.0, 4.0),
    "bake": ActionStyle(_ORANGE, "up-down", 60.0, 1.4, 3.0),
    "grate": ActionStyle(_GREEN, "up-down", 120.0, 0.5, 2.5),
    "mix": ActionStyle(_GREEN, "circle", 120.0, 0.9, 3.0),
}


@dataclass(frozen=True)
class KitchenStyle:
    """A kitchen: its action vocabulary (in recipe order) and its look."""

    actions: tuple[str, ...]
    wall: tuple[int, int, int]  # background base colour
    texture: str  # "tiles" | "stripes" | "dots"
    palette_shift: tuple[int, int, int]  # added to every action colour
    jitter: float  # camera shake amplitude, in pixels at size 64


KITCHENS: dict[str, KitchenStyle] = {
    "a": KitchenStyle(("cut", "peel", "wash", "stir", "fry", "pour"),
                      (205, 195, 170), "tiles", (0, 0, 0), 1.0),
    "b": KitchenStyle(("wash", "cut", "blend", "pour", "stir", "bake"),
                      (120, 135, 150), "stripes", (20, -15, 15), 3.0),
    "c": KitchenStyle(("peel", "grate", "mix", "cut", "blend", "bake"),
                      (170, 150, 120), "dots", (-15, 10, -10), 2.0),
}


@dataclass(frozen=True)
class Grammar:
    """A Markov chain over a kitchen's actions (indices into ``actions``), never repeating an
    action directly, with gamma-distributed durations and background gaps between actions."""

    actions: tuple[str, ...]
    start: np.ndarray  # [A] probabilities of the first action
    transitions: np.ndarray  # [A, A] row-stochastic, zero diagonal
    duration_shape: float = 6.0
    gap_mean: float = 0.8  # seconds of background between two actions

    def first(self, rng: np.random.Generator) -> int:
        return int(rng.choice(len(self.actions), p=self.start))

    def next(self, current: int, rng: np.random.Generator) -> int:
        return int(rng.choice(len(self.actions), p=self.transitions[current]))

    def duration(self, action: int, fps: float, speed: float, rng: np.random.Generator) -> int:
        """Frames of one occurrence: gamma with mean ``duration * speed`` seconds, >= 0.5 s."""
        mean = ACTIONS[self.actions[action]].duration * speed * fps
        k = self.duration_shape
        return max(int(round(0.5 * fps)), int(round(rng.gamma(k, mean / k))))

    def gap(self, fps: float, rng: np.random.Generator) -> int:
        return max(2, int(round(rng.gamma(3.0, self.gap_mean * fps / 3.0))))


def grammar(kitchen: str) -> Grammar:
    """The recipe grammar of ``kitchen``: mostly the next action in recipe order (0.6), often
    the one after (0.25), rarely any other (0.15 shared); recipes usually start at the first."""
    actions = KITCHENS[kitchen].actions
    n = len(actions)
    trans = np.zeros((n, n))
    for i in range(n):
        others = [j for j in range(n) if j not in (i, (i + 1) % n, (i + 2) % n)]
        trans[i, (i + 1) % n] += 0.6
        trans[i, (i + 2) % n] += 0.25
        for j in others:
            trans[i, j] += 0.15 / len(others)
    start = np.full(n, 0.4 / (n - 1))
    start[0] = 0.6
    return Grammar(actions, start, trans)


@dataclass(frozen=True)
class Segment:
    """One stretch of a video: ``action`` is an index into the grammar's actions, or -1 for
    background; frames ``start .. start+length-1``."""

    action: int
    start: int
    length: int


def sample_timeline(g: Grammar, num_frames: int, fps: float, speed: float,
                    rng: np.random.Generator) -> list[Segment]:
    """Background, then actions from the grammar separated by background gaps, cut at
    ``num_frames``. ``speed`` scales action durations (a participant's pace)."""
    segments: list[Segment] = []
    t = g.gap(fps, rng)
    segments.append(Segment(-1, 0, min(t, num_frames)))
    action = g.first(rng)
    while t < num_frames:
        length = min(g.duration(action, fps, speed, rng), num_frames - t)
        segments.append(Segment(action, t, length))
        t += length
        if t >= num_frames:
            break
        gap = min(g.gap(fps, rng), num_frames - t)
        segments.append(Segment(-1, t, gap))
        t += gap
        action = g.next(action, rng)
    return segments
