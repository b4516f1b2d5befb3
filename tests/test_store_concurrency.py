"""Concurrent writers of one feature store: real processes started together on the same new
store, each must finish without error and leave a correct store (no mocks).

Before: one creator's ``open_group(mode="w")`` wiped the other's half-made store
(``ContainsGroupError``, or "exists and is not a feature store"), and two writers replacing
the same video raced between their renames (``No such file or directory``).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import numpy as np

from actrec.io.features import FeatureStore
from actrec.io.integrity import check_store

ROUNDS = 6  # new stores per run: the race is in creation, so each round is a fresh chance
WRITERS = 3

_WORKER = textwrap.dedent("""
    import sys, time, traceback
    from pathlib import Path
    import numpy as np
    from actrec.io.features import FeatureStore

    base, me, rounds, writers = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

    def barrier(name):  # every writer reaches it, then all go on together (60 s at most)
        (base / f"{name}-{me}").touch()
        deadline = time.monotonic() + 60
        while len(list(base.glob(f"{name}-*"))) < writers and time.monotonic() < deadline:
            time.sleep(0)

    barrier("ready")
    try:
        for i in range(rounds):
            barrier(f"round{i}")  # a fresh race on a fresh store each round
            store = FeatureStore.open_or_create(
                base / f"s{i}.zarr", dataset="d", split_scheme="default", classes=["a", "b"],
                splits={"1": {"train": ["v0"], "test": ["v1"]}}, extractor="e",
                extractor_config={}, lookahead=0, dtype="float32", chunk_frames=8)
            for v in range(3):  # every writer writes (and so replaces) the same videos
                barrier(f"r{i}v{v}")
                rng = np.random.default_rng(v)
                store.write_video(f"v{v}", rng.normal(size=(30, 4)), rng.integers(0, 2, 30),
                                  fps=15.0, source=None)
    except BaseException:
        traceback.print_exc()
        for i in range(rounds):  # let the others go on without waiting for this one
            for name in [f"round{i}", *(f"r{i}v{v}" for v in range(3))]:
                (base / f"{name}-{me}").touch()
        sys.exit(1)
    print("done", me)
""")



def _start_together(commands: list[list[str]], timeout: float = 120.0):
    """Run ``commands`` (processes that wait for each other to start); ``(rc, out, err)``
    of each."""
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for cmd in commands]
    deadline = time.monotonic() + timeout
    outs = []
    for p in procs:
        try:
            outs.append((p.wait(timeout=max(1.0, deadline - time.monotonic())),
                         *p.communicate()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise AssertionError("concurrent writers did not finish in time") from None
    return outs


def test_concurrent_writers_create_and_fill_the_same_new_store(tmp_path):
    outs = _start_together([
        [sys.executable, "-c", _WORKER, str(tmp_path), str(w), str(ROUNDS), str(WRITERS)]
        for w in range(WRITERS)])
    for rc, out, err in outs:
        assert rc == 0 and out.startswith("done"), err
    for i in range(ROUNDS):
        store = FeatureStore.open(tmp_path / f"s{i}.zarr")
        assert store.videos() == ["v0", "v1", "v2"] and store.attrs["dataset"] == "d"
        for v in range(3):
            rng = np.random.default_rng(v)
            x, y = store.read(f"v{v}")
            np.testing.assert_array_equal(x, rng.normal(size=(30, 4)).astype(np.float32))
            np.testing.assert_array_equal(y, rng.integers(0, 2, 30))
        assert check_store(store).ok
        assert not (store.path / ".tmp").exists()


def test_two_extract_commands_on_one_new_store_with_overwrite(tiny_kitchen, tmp_path):
    """The issue's case: `actrec extract --overwrite` twice at once into a new store."""
    dataset, index = tiny_kitchen
    out = tmp_path / "s.zarr"
    opts = {"kitchen": "a", "participants": "3", "videos_per_participant": "1",
            "frames_mean": "40", "size": "32", "folds": "3", "seed": "7"}
    args = ["extract", "synthetic", "--root", str(dataset.config.root), "--out", str(out),
            "--overwrite", "--json", *[f"-o{k}={v}" for k, v in opts.items()]]
    # Each process waits for the start signal, then runs the real command line.
    runner = textwrap.dedent("""
        import sys, time
        from pathlib import Path
        import actrec.extract, actrec.io.features, actrec.pipeline, zarr  # imports before
        from actrec.cli import main
        base = Path(sys.argv[1]); (base / f"ready-{sys.argv[2]}").touch()
        deadline = time.monotonic() + 60
        while len(list(base.glob("ready-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0)
        main(sys.argv[3:])
    """)
    outs = _start_together([[sys.executable, "-c", runner, str(tmp_path), str(w),
                                       *args] for w in range(2)])
    for rc, stdout, err in outs:
        assert rc == 0, err
        assert '"failed": []' in stdout
    store = FeatureStore.open(out)
    assert store.videos() == sorted(index.videos) and check_store(store).ok
    for vid, record in index.videos.items():
        np.testing.assert_array_equal(store.read(vid)[1], record.labels)
