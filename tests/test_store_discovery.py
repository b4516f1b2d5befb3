"""A dataset reference finds the user's feature store however it was made (extracted or
imported), and an ambiguous one is an error listing the stores and how to choose."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from actrec.errors import ConfigError, DataError
from actrec.refs import existing_store, workspace_stores


def mstcn_root(root: Path) -> Path:
    """A tiny MS-TCN layout folder (the public features' format): 4 videos, 2 classes."""
    for sub in ("groundTruth", "features", "splits"):
        (root / sub).mkdir(parents=True)
    (root / "mapping.txt").write_text("0 background\n1 cut\n")
    rng = np.random.default_rng(0)
    for vid in ("rgb-01-1", "rgb-01-2", "rgb-02-1", "rgb-02-2"):
        (root / "groundTruth" / f"{vid}.txt").write_text("background\n" * 6 + "cut\n" * 10)
        np.save(root / "features" / f"{vid}.npy", rng.normal(size=(5, 16)).astype(np.float32))
    (root / "splits" / "train.split1.bundle").write_text("rgb-01-1.txt\nrgb-01-2.txt\n")
    (root / "splits" / "test.split1.bundle").write_text("rgb-02-1.txt\nrgb-02-2.txt\n")
    return root


def lstr_root(root: Path) -> Path:
    (root / "rgb_kinetics_resnet50").mkdir(parents=True)
    (root / "target_perframe").mkdir()
    (root / "data_info.json").write_text(json.dumps({"SALADS": {
        "class_index": ["background", "cut"], "train_session_set": ["a"],
        "test_session_set": ["b"]}}))
    for vid in ("a", "b"):
        np.save(root / "rgb_kinetics_resnet50" / f"{vid}.npy", np.zeros((4, 3), np.float32))
        np.save(root / "target_perframe" / f"{vid}.npy", np.eye(2)[[0, 1, 1, 0]])
    return root


def actrec(args, capsys) -> tuple[int, str, str]:
    from actrec.cli import main

    capsys.readouterr()
    try:
        main(list(map(str, args)))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_train_finds_an_imported_store_by_its_name(tmp_path, monkeypatch, capsys):
    """The issue's report: `actrec train lstm --d1 salads` after `actrec import mstcn ...
    --name salads` looked for features/salads/colorgrad.zarr and failed."""
    monkeypatch.setenv("ACTREC_HOME", str(tmp_path / "home"))
    root = mstcn_root(tmp_path / "public")
    code, out, err = actrec(["import", "mstcn", root, "--name", "salads", "--lookahead", "10",
                             "--json"], capsys)
    assert code == 0, err
    imported = Path(json.loads(out)["store"])
    assert workspace_stores("salads") == [imported]
    assert existing_store("salads") == imported
    code, out, err = actrec(["train", "lstm", "--d1", "salads", "--iterations", "2",
                             "--history", "4", "--mix", "2:0", "-o", "hidden=4",
                             "--run-dir", tmp_path / "run", "--json"], capsys)
    assert code == 0, err
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert str(imported) in json.dumps(config)


def test_a_name_that_is_also_a_data_folder_here_finds_the_imported_store(tmp_path, monkeypatch,
                                                                        capsys):
    # `actrec import mstcn imp --name imp`, then `--d1 imp` from the folder holding imp/: the
    # raw data folder was taken for a store ("imp: no feature store here")
    monkeypatch.setenv("ACTREC_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    mstcn_root(tmp_path / "imp")
    code, out, err = actrec(["import", "mstcn", "imp", "--name", "imp", "--json"], capsys)
    assert code == 0, err
    imported = Path(json.loads(out)["store"])
    assert existing_store("imp") == imported
    # a path is a path: the folder itself (and its error, if it holds no store)
    assert existing_store("./imp") == Path("imp")
    assert existing_store(str(tmp_path / "imp")) == tmp_path / "imp"
    # a folder here that IS a store stays the store, whatever the workspace holds
    (tmp_path / "imp" / "zarr.json").write_text("{}")
    assert existing_store("imp") == Path("imp")


def test_several_stores_are_listed_with_how_to_choose(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ACTREC_HOME", str(tmp_path / "home"))
    with pytest.raises(DataError, match=r"no features of 'salads' yet .*actrec extract salads "
                                        r"--extractor NAME.*actrec import mstcn\|lstr ROOT "
                                        r"--name salads"):
        existing_store("salads")
    for layout, make in (("mstcn", mstcn_root), ("lstr", lstr_root)):
        code, _, err = actrec(["import", layout, make(tmp_path / layout), "--name", "salads"],
                              capsys)
        assert code == 0, err
    stores = sorted(workspace_stores("salads"), key=lambda s: s.name)
    assert [s.name for s in stores] == ["lstr-import.zarr", "mstcn-import.zarr"]
    with pytest.raises(ConfigError) as info:
        existing_store("salads")
    message = str(info.value)
    assert "'salads' has 2 feature stores in the workspace" in message
    assert f"lstr-import: {stores[0]}" in message and f"mstcn-import: {stores[1]}" in message
    assert "choose one with --extractor NAME or give its store path" in message
    assert existing_store("salads", "lstr-import") == stores[0]
    assert existing_store(str(stores[1])) == stores[1]  # a path is itself
    with pytest.raises(DataError, match=r"no 'colorgrad' features of 'salads' yet"):
        existing_store("salads", "colorgrad")
    # the same command line, ambiguous: the error reaches the user without a traceback
    code, _, err = actrec(["train", "lstm", "--d1", "salads", "--iterations", "1"], capsys)
    assert code == 1 and "has 2 feature stores" in err and "Traceback" not in err
    # other datasets' stores are not this one's: salads:label_set=eval is another dataset
    assert workspace_stores("salads:label_set=eval") == []
