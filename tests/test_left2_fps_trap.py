"""Own videos at 10 fps extracted at the mstcn dataset's default 15 fps: every video is refused
and the store stays empty. The refusal says the file's own rate and how to read its labels at
it (``-o fps=10``); after extracting with ``-o fps=10`` (another store), training on the
reference without ``fps`` finds the empty store and names the one that holds the videos."""

from __future__ import annotations

import numpy as np
import pytest

from actrec.errors import DataError

CLASSES = ["background", "red", "blue"]


def _dataset(root, write_mp4, fps=10.0, videos=("alice_1", "alice_2", "bob_1", "bob_2"),
             frames=54, labels_per_video=None):
    """The guide's mstcn layout: mp4 files at ``fps`` with ``frames`` frames, one label a frame
    (``labels_per_video`` labels instead when given); split 1 trains on all but the last."""
    (root / "groundTruth").mkdir(parents=True)
    (root / "splits").mkdir()
    (root / "mapping.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(CLASSES)))
    rng = np.random.default_rng(0)
    for k, name in enumerate(videos):
        pixels = rng.integers(0, 255, (frames, 16, 16, 3), dtype=np.uint8)
        write_mp4(root / f"{name}.mp4", pixels, fps=fps)
        n = labels_per_video or frames
        labels = [0] * (n // 3) + [1 + k % 2] * (n - n // 3)
        (root / "groundTruth" / f"{name}.txt").write_text("".join(CLASSES[c] + "\n"
                                                                  for c in labels))
    (root / "splits" / "train.split1.bundle").write_text(
        "".join(f"{v}.txt\n" for v in videos[:-1]))
    (root / "splits" / "test.split1.bundle").write_text(f"{videos[-1]}.txt\n")
    return root


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("ACTREC_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_a_refusal_names_the_files_own_rate_when_it_explains_the_lengths(tmp_path, home,
                                                                         write_mp4):
    from actrec.pipeline import extract_dataset

    root = _dataset(tmp_path / "mydata", write_mp4)
    report = extract_dataset("mstcn", dataset_options={"root": str(root)})
    assert report.written == () and len(report.failed) == 4
    for _, why in report.failed:  # 54 frames at 10 fps read at 15 fps: 81 frames, 54 labels
        assert "81 frames (5.4 s) at 15 fps but 54 labels at that rate" in why
        assert why.endswith("the file is 10 fps (54 frames for 54 labels): labels of "
                            "every frame need -o fps=10")
    # the gap in seconds (the first check, and the one a long video meets) says it too
    report = extract_dataset("mstcn", dataset_options={"root": str(root)}, max_length_gap=1.0,
                             overwrite=True)
    assert all("differ by 1.8 s" in why and "need -o fps=10" in why
               for _, why in report.failed)
    report = extract_dataset("mstcn", dataset_options={"root": str(root), "fps": "10"})
    assert len(report.written) == 4 and report.failed == ()


def test_no_rate_advice_where_the_files_frames_do_not_fit_the_labels(tmp_path, home,
                                                                       write_mp4):
    from actrec.pipeline import extract_dataset

    # 54 frames at 10 fps with 36 labels: at no rate of the file's is there one label a frame
    root = _dataset(tmp_path / "short", write_mp4, labels_per_video=36)
    report = extract_dataset("mstcn", dataset_options={"root": str(root), "fps": "10"})
    assert len(report.failed) == 4
    for _, why in report.failed:
        assert "54 frames (5.4 s) at 10 fps but 36 labels" in why
        assert "the file is" not in why and "-o fps" not in why


def _two_stores(tmp_path, write_mp4):
    """The trap: extracted at the default rate (every video refused, an empty store), then
    with -o fps=10 (a second store holding them all)."""
    from actrec.pipeline import extract_dataset

    root = _dataset(tmp_path / "mydata", write_mp4)
    assert extract_dataset("mstcn", dataset_options={"root": str(root)}).written == ()
    assert len(extract_dataset("mstcn", dataset_options={"root": str(root), "fps": "10"})
               .written) == 4
    return root


def test_the_empty_store_names_the_store_of_the_same_data_that_holds_the_videos(
        tmp_path, home, write_mp4):
    from actrec.refs import existing_store, other_store_hint, stores_holding_more

    root = _two_stores(tmp_path, write_mp4)
    empty = existing_store(f"mstcn:root={root}")
    full = existing_store("mstcn:fps=10")
    assert empty != full and empty.parent.name.startswith("mstcn@")
    wanted = ["alice_1", "alice_2", "bob_1"]
    assert stores_holding_more(empty, wanted) == [(full, 3, "mstcn:fps=10")]
    assert other_store_hint(empty, wanted) == (
        f"the workspace store {full} (root {root}, fps=10.0) holds all 3 of the split's "
        f"videos: did you mean --d1 mstcn:fps=10? (or give that store's path)")
    assert "did you mean --d2 mstcn:fps=10?" in other_store_hint(empty, wanted, "--d2")
    assert other_store_hint(full, wanted) == ""  # it holds them itself
    assert stores_holding_more(full, wanted) == []


def test_stores_of_other_data_are_not_offered(tmp_path, home, write_mp4):
    from actrec.pipeline import extract_dataset
    from actrec.refs import existing_store, stores_holding_more

    root = _two_stores(tmp_path, write_mp4)
    other = _dataset(tmp_path / "other", write_mp4)  # the same names under another root
    assert len(extract_dataset("mstcn", dataset_options={"root": str(other), "fps": "10"})
               .written) == 4
    empty = existing_store(f"mstcn:root={root}")
    (mine,) = stores_holding_more(empty, ["alice_1"])
    assert mine[0] == existing_store(f"mstcn:fps=10,root={root}")
    # two fps=10 stores now: the bare reference is ambiguous, the root tells them apart
    assert mine[2] == f"mstcn:fps=10,root={root}"
    assert stores_holding_more(empty, ["alice_1"])[0][0] != \
        existing_store(f"mstcn:fps=10,root={other}")
    # another extractor's store of the same data is other features: not offered either
    assert extract_dataset("mstcn", dataset_options={"root": str(root), "fps": "10"},
                           extractor="framediff").written
    assert [m[0] for m in stores_holding_more(empty, ["alice_1"])] == [mine[0]]


def test_training_on_the_empty_store_says_which_reference_was_meant(tmp_path, home,
                                                                    write_mp4):
    from actrec.pipeline import train_from_refs

    root = _two_stores(tmp_path, write_mp4)
    with pytest.raises(DataError) as err:
        train_from_refs("lstm", d1=f"mstcn:root={root}", iterations=1, history=8,
                        model_options={"hidden": "4"}, run_dir=tmp_path / "run")
    message = str(err.value)
    assert "3 failed extraction" in message and "need -o fps=10" in message
    assert "did you mean --d1 mstcn:fps=10?" in message
    # the videos are extracted, in the other store: no advice to fix or extract them
    assert "fix the video" not in message and "extract them first" not in message


def test_a_moved_store_is_named_as_the_same_data_not_as_other_options(tmp_path, home,
                                                                      write_mp4):
    """A store renamed or moved within the workspace's features folder: the reference that
    made it finds no store in its folder, and the error names it as that data (give its path,
    or move it back to where the reference looks), not as a store "made with other options"."""
    from actrec.refs import existing_store

    root = _two_stores(tmp_path, write_mp4)
    full = existing_store("mstcn:fps=10")
    moved = home / "features" / "renamed" / full.name
    moved.parent.mkdir()
    full.rename(moved)
    full.parent.rmdir()
    for ref in ("mstcn:fps=10", f"mstcn:fps=10,root={root}", "mstcn:fps=10.0"):
        with pytest.raises(DataError) as err:
            existing_store(ref, "colorgrad")
        message = str(err.value)
        assert (f"the workspace has a store of the same data under another folder (moved or "
                f"renamed?): {moved} (root {root}, fps=10.0); give its path, or move it back "
                f"to {full}") in message, message
        assert message.count(str(moved)) == 1  # not listed among the other options' stores
    # the other store (default options) is still told apart as other options
    assert f"{existing_store(f'mstcn:root={root}')} (root {root})" in message
    assert "1 store(s) of dataset 'mstcn' made with other dataset options" in message
    # a moved store of another root is other data: not offered as this reference's
    with pytest.raises(DataError) as err:
        existing_store(f"mstcn:fps=10,root={tmp_path}")
    assert "same data under another folder" not in str(err.value)
