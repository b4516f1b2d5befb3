"""``actrec check`` and ``actrec extract`` print video ids, paths and error messages as they
are: square brackets in them are text, not rich markup. A damaged video ``v[bad]`` was listed
as ``v``; an extractor's error ``... [/x] ...`` made printing the extraction's report fail
with a MarkupError (a traceback once every video was done). Real stores and videos."""

from __future__ import annotations

import numpy as np
from click.testing import CliRunner
from rich.console import Console

from actrec.cli import cli
from actrec.cli.extract_cmd import _render as render_extraction
from actrec.extract import extract_features
from actrec.io.features import FeatureStore
from actrec.plugin_api import FeatureExtractor


def test_check_lists_a_damaged_video_by_its_id_as_written(tmp_path):
    store = FeatureStore.open_or_create(
        tmp_path / "s[x].zarr", dataset="toy", split_scheme="default", classes=["a", "b"],
        splits={}, extractor="toy", extractor_config={}, lookahead=0, chunk_frames=4)
    for vid in ("v[bad]", "w"):
        store.write_video(vid, np.zeros((8, 3), np.float32), np.zeros(8, int), fps=15.0,
                          source=None)
    (store.video_dir("v[bad]") / "features" / "c" / "1" / "0").unlink()  # a chunk gone
    res = CliRunner().invoke(cli, ["check", str(store.path)], terminal_width=300)
    assert res.exit_code == 1, res.output
    row = next(line for line in res.output.splitlines() if "│ damaged" in line)
    assert [c.strip() for c in row.split("│")[1:3]] == ["v[bad]", "damaged"]
    assert f"check {store.path}" in res.output  # the title's path too


class Refuses(FeatureExtractor):
    """Fails every video with a message holding square brackets."""

    name = "refuses"
    lookahead = 0

    def dim(self) -> int:
        return 1

    def extract(self, batches):
        for _ in batches:
            raise ValueError("expected frames [t, h, w, c] of [/x] kind")
        yield from ()


def test_an_extraction_report_prints_error_text_as_written(tiny_kitchen, tmp_path):
    _, index = tiny_kitchen
    report = extract_features(index, Refuses(), tmp_path / "s.zarr", dataset_ref="r")
    assert report.failed and not report.written
    console = Console(record=True, width=300, color_system=None)
    console.print(render_extraction(report))
    text = console.export_text()
    assert text.count("expected frames [t, h, w, c] of [/x] kind") == len(report.failed)
