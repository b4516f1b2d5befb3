"""Shared fixtures: real mp4 files and a tiny generated synthetic kitchen.

* ``write_mp4(path, frames, fps=15.0) -> Path``: writes RGB uint8 frames ``[T, H, W, 3]`` with
  OpenCV's 'mp4v' writer (what decord reads in the tests).
* ``level_frames(T, H=32, W=40) -> ndarray``: frames whose flat grey level identifies the frame
  (``20 + 9 i mod 216``), so a decoded frame's mean tells which frame it is despite compression.
* ``tiny_kitchen``: session-wide ``(SyntheticKitchen, DatasetIndex)`` for kitchen ``a`` with 3
  participants x 1 video of ~40 frames at 32 x 32, generated once into a temp folder.
* ``extractor_plugin_site(site, module, cls, name, source) -> Path`` (import it from conftest):
  a real plugin distribution on disk, for subprocesses run with ``site`` on PYTHONPATH.
* ``idt_root``: the real 64-d IDT features of 5 Breakfast videos (shared/data) in the MS-TCN
  layout, in a temp folder (tests using it skip where shared/data is absent).
* ``s3_server``: session-wide URL of a real S3-compatible HTTP server (moto) on a free port;
  ``bucket``: a fresh bucket on it, with credentials and endpoint in the ``AWS_*`` variables
  as a user passes them (tests using them skip where s3fs or moto is not installed).
"""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pytest

# Tests interrupt the commands they start with SIGINT. A test run started in the background by
# a non-interactive shell (a CI script's `cmd &`, nohup) inherits SIGINT ignored, and every
# command it starts would too (Python leaves an ignored SIGINT ignored), so no interrupt would
# arrive: with a handler here instead, the commands start with SIGINT's default (exec resets
# handlers, not an ignore).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _level_of(i: int) -> int:
    """Grey level of frame ``i`` in ``level_frames`` (steps of 9, 20..227)."""
    return 20 + (9 * i) % 216


def _write_mp4(path: Path, frames: np.ndarray, fps: float = 15.0) -> Path:
    import cv2

    frames = np.asarray(frames, dtype=np.uint8)
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
    assert writer.isOpened(), f"OpenCV cannot write {path}"
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[:, :, ::-1]))  # RGB -> BGR
    writer.release()
    return Path(path)


def _level_frames(count: int, h: int = 32, w: int = 40) -> np.ndarray:
    return np.stack([np.full((h, w, 3), _level_of(i), dtype=np.uint8) for i in range(count)])


@pytest.fixture
def write_mp4():
    """``write_mp4(path, frames, fps=15.0) -> Path`` (RGB uint8 ``[T, H, W, 3]``)."""
    return _write_mp4


@pytest.fixture
def level_frames():
    """``level_frames(T, H=32, W=40)``: frame ``i`` is flat grey ``20 + 9 i mod 216``."""
    return _level_frames


@pytest.fixture(scope="session")
def tiny_kitchen(tmp_path_factory):
    """``(dataset, index)`` of a tiny generated kitchen ``a`` (3 people, 1 video each)."""
    from actrec_plugins.datasets.synthetic import SyntheticKitchen

    root = tmp_path_factory.mktemp("synthetic")
    dataset = SyntheticKitchen(SyntheticKitchen.Config(
        root=root, kitchen="a", participants=3, videos_per_participant=1, frames_mean=40,
        size=32, folds=3, seed=7))
    return dataset, dataset.load()


def extractor_plugin_site(site: Path, module: str, cls: str, name: str, source: str) -> Path:
    """``site`` holding ``<module>.py`` (``source``) and the dist-info of a distribution
    ``<module>`` 1.0 that declares the extractor ``name = module:cls``: installed for a
    process that has ``site`` on its path. Returns ``site``."""
    info = site / f"{module}-1.0.dist-info"
    info.mkdir(parents=True)
    dist = module.replace("_", "-")
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[actrec.extractors]\n{name} = {module}:{cls}\n")
    (site / f"{module}.py").write_text(source)
    return site


@pytest.fixture()
def idt_root(tmp_path):
    """The real 64-d IDT features of 5 Breakfast videos in the MS-TCN layout (D x T .npy)."""
    import shutil

    idt = Path(__file__).resolve().parents[2] / "shared" / "data" / "features" / "breakfast-idt64"
    root = tmp_path / "bf"
    (root / "features").mkdir(parents=True)
    shutil.copytree(idt / "groundTruth", root / "groundTruth")
    shutil.copy(idt / "mapping.txt", root)
    (root / "splits").mkdir()
    videos = sorted(p.stem for p in idt.glob("P*.txt"))
    (root / "splits" / "test.split1.bundle").write_text("".join(v + ".txt\n" for v in videos[:2]))
    (root / "splits" / "train.split1.bundle").write_text("".join(v + ".txt\n"
                                                                 for v in videos[2:]))
    for v in videos:
        np.save(root / "features" / f"{v}.npy", np.loadtxt(idt / f"{v}.txt").T)  # [D, T]
    return root


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible HTTP server (moto) on a free port, for the session."""
    import logging

    pytest.importorskip("s3fs")
    server_mod = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    _host, port = server.get_host_and_port()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def bucket(s3_server, monkeypatch):
    """A fresh bucket; credentials and endpoint as a user passes them (AWS_* variables)."""
    import uuid

    import s3fs

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    s3fs.S3FileSystem.clear_instance_cache()
    name = f"b-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem().mkdir(name)
    yield name
    s3fs.S3FileSystem.clear_instance_cache()
