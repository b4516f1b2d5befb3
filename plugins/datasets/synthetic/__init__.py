"""The built-in ``synthetic`` dataset: kitchens of generated mp4 videos with per-frame labels.

Recipes are action sequences from a per-kitchen grammar (``grammar.py``); each action is drawn
as a coloured blob with a tool moving in the action's pattern (``render.py``). Pairs of
actions share colour and tool and differ only in motion, so a single frame is ambiguous and
temporal context helps. Kitchens differ in look (wall, palette, camera shake) and partly in
vocabulary (``a`` and ``b`` share cut, stir, pour and wash), so training across two kitchens
is meaningful. Everything follows from ``seed``.

Files: ``<root>/<kitchen>-<config hash>/<video id>.mp4`` and ``manifest.json`` (labels,
participants, splits), written last; an existing folder is reused and an interrupted
generation resumes.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actrec.errors import ConfigError, DataError
from actrec.plugin_api import Dataset, DatasetIndex, PluginConfig, Split, VideoRecord

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    from rich.progress import Progress

__all__ = ["SyntheticKitchen"]

GENERATOR_VERSION = 1  # bump when rendering changes, so cached folders are regenerated
MANIFEST = "manifest.json"


class SyntheticKitchen(Dataset):
    """Generated kitchen videos (see the module docstring); ``load()`` generates on first use."""

    name = "synthetic"

    @dataclass(frozen=True)
    class Config(PluginConfig):
        root: Path | None = None  # None: actrec.workspace.dataset_root("synthetic")
        kitchen: str = "a"  # "a", "b" or "c"
        participants: int = 6
        videos_per_participant: int = 4
        frames_mean: int = 300  # video lengths are uniform in [0.75, 1.25] x this
        size: int = 64  # frame side in pixels (even, >= 32, not 48 or 72)
        fps: float = 15.0
        seed: int = 0
        noise: float = 0.06  # std of Gaussian pixel noise, as a fraction of 255
        folds: int = 3  # leave-person-out splits "1".."folds"

    # ------------------------------------------------------------------ public

    @property
    def folder(self) -> Path:
        """``<root>/<kitchen>-<hash of every option but root>`` (root filled by actrec, see
        ``actrec.plugin_api.Dataset``)."""
        cfg = self.config
        return Path(cfg.root) / f"{cfg.kitchen}-{self._config_hash()}"

    @property
    def classes(self) -> tuple[str, ...]:
        """``background`` first, then the kitchen's actions in alphabetical order."""
        from .grammar import KITCHENS

        return ("background", *sorted(KITCHENS[self.config.kitchen].actions))

    def load(self) -> DatasetIndex:
        """The index, generating the videos first if the folder is missing or incomplete."""
        self._validate()
        if not self.generated():
            self.generate()
        return self._index_from_manifest(self.folder / MANIFEST)

    def generated(self) -> bool:
        """Whether the manifest and every video it lists are written (``load`` then generates
        nothing; ``generate(progress)`` shows the work where it would)."""
        manifest = self.folder / MANIFEST
        return manifest.is_file() and self._files_present(manifest)

    def generate(self, progress: Progress | None = None) -> Path:
        """Write every missing video, then the manifest; returns the folder.

        Each video has its own random stream (seed, kitchen, participant, video), so a
        resumed run produces the same files as an uninterrupted one.
        """
        from .render import render_frames, write_mp4

        self._validate()
        cfg = self.config
        folder = self.folder
        if folder.exists() and not folder.is_dir():
            raise DataError(f"{folder}: expected the synthetic kitchen's folder, found a file; "
                            "move it away or choose another root")
        folder.mkdir(parents=True, exist_ok=True)
        plans = self._plans()
        # Something other than a file where a video goes (a folder, a socket) would be
        # rendered for nothing and then fail the final rename: refuse first, naming it.
        for plan in plans:
            path = folder / plan["file"]
            if path.exists() and not path.is_file():
                raise DataError(f"{path}: expected a video file of the synthetic kitchen, "
                                "found a folder or other non-file; move it away and run again")
        task = progress.add_task(f"synthetic kitchen {cfg.kitchen}", total=len(plans)) \
            if progress is not None else None
        style = self._style()
        for plan in plans:
            path = folder / plan["file"]
            if not path.is_file():
                frames = render_frames(plan["segments"], style.actions, style, plan["person"],
                                       size=cfg.size, fps=cfg.fps, noise=cfg.noise,
                                       rng=plan["render_rng"])
                written = write_mp4(path, frames, fps=cfg.fps, size=cfg.size)
                assert written == plan["labels"].shape[0]
            if task is not None:
                progress.advance(task)
        self._write_manifest(folder, plans)
        return folder

    # ------------------------------------------------------------------ internals

    def _validate(self) -> None:
        from .grammar import KITCHENS

        cfg = self.config
        where = "dataset 'synthetic'"
        checks = [
            (cfg.kitchen in KITCHENS,
             f"option 'kitchen' for {where}: unknown kitchen {cfg.kitchen!r}; "
             f"expected one of: {', '.join(KITCHENS)}"),
            (cfg.participants >= 1, f"option 'participants' for {where} must be >= 1"),
            (cfg.videos_per_participant >= 1,
             f"option 'videos_per_participant' for {where} must be >= 1"),
            (cfg.frames_mean >= 10, f"option 'frames_mean' for {where} must be >= 10"),
            # decord 0.6 cannot return frames 48 or 72 pixels wide (see actrec.io.video).
            (cfg.size >= 32 and cfg.size % 2 == 0 and cfg.size not in (48, 72),
             f"option 'size' for {where} must be an even number >= 32 other than 48 and 72 "
             f"(sizes decord cannot read back), got {cfg.size}"),
            (cfg.fps > 0, f"option 'fps' for {where} must be positive"),
            (cfg.noise >= 0, f"option 'noise' for {where} must be >= 0"),
            (2 <= cfg.folds <= cfg.participants,
             f"option 'folds' for {where} must be between 2 and participants "
             f"({cfg.participants}), got {cfg.folds}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def _config_hash(self) -> str:
        options = {k: v for k, v in self.config.to_dict().items() if k != "root"}
        options["generator_version"] = GENERATOR_VERSION
        text = json.dumps(options, sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:10]

    def _style(self):
        from .grammar import KITCHENS

        return KITCHENS[self.config.kitchen]

    def _rng(self, *key: int) -> np.random.Generator:
        import zlib

        import numpy as np

        kitchen = zlib.crc32(self.config.kitchen.encode())
        return np.random.default_rng(np.random.SeedSequence(self.config.seed,
                                                            spawn_key=(kitchen, *key)))

    def _plans(self) -> list[dict[str, Any]]:
        """Per video: id, participant, file, segments, labels ``[T]`` and the generator that
        renders it (drawn after the labels, from the same per-video stream)."""
        import numpy as np

        from .grammar import grammar, sample_timeline
        from .render import Participant

        cfg = self.config
        g = grammar(cfg.kitchen)
        cls_of = [self.classes.index(a) for a in g.actions]
        plans = []
        for p in range(cfg.participants):
            person = Participant.sample(self._rng(p))
            pid = f"P{p + 1:02d}"
            for v in range(cfg.videos_per_participant):
                rng = self._rng(p, v + 1)
                n = int(round(cfg.frames_mean * rng.uniform(0.75, 1.25)))
                segments = sample_timeline(g, n, cfg.fps, person.speed, rng)
                labels = np.zeros(n, dtype=np.int64)
                for s in segments:
                    labels[s.start:s.start + s.length] = cls_of[s.action] if s.action >= 0 else 0
                vid = f"{cfg.kitchen}_{pid}_{v + 1:02d}"
                recipe = ">".join(g.actions[s.action] for s in segments if s.action >= 0)
                plans.append({"id": vid, "participant": pid, "file": f"{vid}.mp4",
                              "segments": segments, "labels": labels, "person": person,
                              "recipe": recipe, "render_rng": rng})
        return plans

    def _splits(self, participants: list[str]) -> dict[str, dict[str, list[str]]]:
        """Fold ``k`` tests participants ``k-1, k-1+folds, ...`` (round robin)."""
        folds = self.config.folds
        return {str(k + 1): {"test": participants[k::folds]} for k in range(folds)}

    def _write_manifest(self, folder: Path, plans: list[dict[str, Any]]) -> None:
        participants = sorted({p["participant"] for p in plans})
        videos = []
        for p in plans:
            labels = p["labels"]
            # Run-length encoding keeps the manifest small: [[class, frames], ...].
            change = [0] + [i for i in range(1, len(labels)) if labels[i] != labels[i - 1]]
            bounds = change + [len(labels)]
            rle = [[int(labels[a]), b - a] for a, b in zip(bounds[:-1], bounds[1:])]
            videos.append({"id": p["id"], "participant": p["participant"], "file": p["file"],
                           "recipe": p["recipe"], "labels": rle})
        manifest = {
            "generator_version": GENERATOR_VERSION,
            "config": {k: v for k, v in self.config.to_dict().items() if k != "root"},
            "classes": list(self.classes),
            "fps": self.config.fps,
            "splits": self._splits(participants),
            "videos": videos,
        }
        tmp = folder / (MANIFEST + ".part")
        tmp.write_text(json.dumps(manifest, indent=1))
        os.replace(tmp, folder / MANIFEST)

    def _read_manifest(self, manifest: Path) -> dict[str, Any]:
        try:
            return json.loads(manifest.read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"{manifest}: unreadable synthetic manifest ({exc})") from None

    def _files_present(self, manifest: Path) -> bool:
        data = self._read_manifest(manifest)
        return all((manifest.parent / v["file"]).is_file() for v in data.get("videos", []))

    def _index_from_manifest(self, manifest: Path) -> DatasetIndex:
        import numpy as np

        data = self._read_manifest(manifest)
        folder = manifest.parent
        try:
            videos = {}
            for v in data["videos"]:
                labels = np.concatenate([np.full(n, c, dtype=np.int64) for c, n in v["labels"]])
                videos[v["id"]] = VideoRecord(id=v["id"], participant=v["participant"],
                                              labels=labels, fps=float(data["fps"]),
                                              path=folder / v["file"], recipe=v["recipe"])
            splits = {}
            for name, s in data["splits"].items():
                test_people = set(s["test"])
                test = tuple(vid for vid, r in videos.items() if r.participant in test_people)
                train = tuple(vid for vid, r in videos.items() if r.participant not in test_people)
                splits[name] = Split(name, train, test)
            return DatasetIndex(name=self.name, classes=tuple(data["classes"]), videos=videos,
                                splits=splits, fps=float(data["fps"]), background=0)
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{manifest}: malformed synthetic manifest ({exc!r})") from None
