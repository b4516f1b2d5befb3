"""MS-TCN feature files must be D x T with one D: a T x D file (frames first) is refused by
name before anything is written. It used to be imported with its D columns taken for frames
and its labels cut to D frames (counted as a "repair"), the first video written as garbage
before a later one's other width stopped the import."""

from __future__ import annotations

import numpy as np
import pytest
from test_importers import needs_data

from actrec.errors import DataError
from actrec.importers import import_mstcn


@needs_data
def test_transposed_feature_files_are_refused_before_anything_is_written(idt_root, tmp_path):
    features = sorted((idt_root / "features").glob("*.npy"))
    for path in features:  # every file T x D, as np.loadtxt reads the text features
        np.save(path, np.load(path).T)
    store = tmp_path / "store"
    with pytest.raises(DataError, match=r"look transposed, T x D.*D x T.*nothing written"):
        import_mstcn(idt_root, store, name="bf")
    assert not store.exists()


@needs_data
def test_one_transposed_file_is_named(idt_root, tmp_path):
    odd = sorted((idt_root / "features").glob("*.npy"))[2]
    np.save(odd, np.load(odd).T)  # [T, 64]
    store = tmp_path / "store"
    with pytest.raises(DataError, match=rf"{odd.name}: features of shape \d+ x 64, while 4 "
                                        rf"other feature file\(s\) have D = 64"):
        import_mstcn(idt_root, store, name="bf")
    assert not store.exists()
    np.save(odd, np.load(odd).T)  # back to D x T: imported as before
    report = import_mstcn(idt_root, store, name="bf")
    assert report.written == 5 and report.dim == 64 and report.repairs == {}
