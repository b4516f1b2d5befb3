"""`actrec extract --status STORE`: a sharded run's progress from what the runs record in the
store (done, failed with reasons, claimed by whom and whether stale, pending; per shard)."""

from __future__ import annotations

import dataclasses
import json
import os
import time

import pytest
from actrec_plugins.extractors.colorgrad import ColorGradient
from click.testing import CliRunner

from actrec.extract import extract_features, in_shard
from actrec.extract_status import store_status
from actrec.io.features import encode_video_id

CG = ColorGradient.Config(grid=2, bins=4, resize=32)


@pytest.fixture(scope="module")
def six_videos(tmp_path_factory):
    from actrec_plugins.datasets.synthetic import SyntheticKitchen

    root = tmp_path_factory.mktemp("kitchen")
    dataset = SyntheticKitchen(SyntheticKitchen.Config(
        root=root, kitchen="b", participants=6, videos_per_participant=1, frames_mean=24,
        size=32, folds=2, seed=3))
    return dataset, dataset.load()


def _shard(index, i: int, n: int) -> list[str]:
    return sorted(v for v in index.videos if in_shard(v, (i, n)))


def _other_machine(store, shard: str, videos: list[str], claims: dict[str, float]) -> None:
    """What a run on another machine leaves in the store: its run record, and claims on the
    videos it extracts now, last refreshed ``age`` seconds ago."""
    (store / ".runs").mkdir(exist_ok=True)
    (store / ".runs" / f"machine-b-77-{shard.replace('/', '_')}.json").write_text(json.dumps(
        {"host": "machine-b", "pid": 77, "started": time.time() - 60, "finished": None,
         "shard": shard, "workers": 1, "extractor": "colorgrad", "videos": videos}))
    for vid, age in claims.items():
        target = store / ".claims" / f"{encode_video_id(vid)}.json"
        target.parent.mkdir(exist_ok=True)
        target.write_text(json.dumps({"video": vid, "host": "machine-b", "pid": 77,
                                      "token": "b", "since": time.time() - age,
                                      "shard": shard}))
        os.utime(target, (time.time() - age, time.time() - age))


def test_status_counts_a_sharded_run(six_videos, tmp_path):
    from actrec.cli import cli

    _, index = six_videos
    first, second, third = (_shard(index, i, 3) for i in (1, 2, 3))
    assert (len(first), len(second), len(third)) == (3, 2, 1)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"")
    bad = first[1]
    damaged = dataclasses.replace(index, videos={
        **index.videos, bad: dataclasses.replace(index.videos[bad], path=broken)})
    store = tmp_path / "s.zarr"
    report = extract_features(damaged, ColorGradient(CG), store, dataset_ref="r", shard="1/3")
    assert len(report.written) == 2 and [v for v, _ in report.failed] == [bad]
    # Machine b runs shards 2/3 and 3/3: it holds second[0] now; its claim on third[0] is old.
    _other_machine(store, "2/3", second, {second[0]: 1.0})
    _other_machine(store, "3/3", third, {third[0]: 1000.0})

    status = store_status(store)
    assert status.planned == 6
    assert list(status.done) == sorted(set(first) - {bad})
    assert [(v, h) for v, _, h in status.failed] == [(bad, os.uname().nodename)]
    assert "broken.mp4" in status.failed[0][1]
    assert [(c.video, c.host, c.pid, c.stale) for c in status.claimed] == \
        sorted([(second[0], "machine-b", 77, False), (third[0], "machine-b", 77, True)])
    assert list(status.pending) == [second[1]]
    assert [s.to_dict() for s in status.shards] == [
        {"shard": "1/3", "planned": 3, "done": 2, "failed": 1, "claimed": 0, "pending": 0},
        {"shard": "2/3", "planned": 2, "done": 0, "failed": 0, "claimed": 1, "pending": 1},
        {"shard": "3/3", "planned": 1, "done": 0, "failed": 0, "claimed": 1, "pending": 0}]

    runner = CliRunner()
    out = runner.invoke(cli, ["extract", "--status", str(store), "--json"],
                        catch_exceptions=False)
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["counts"] == {"done": 2, "failed": 1, "claimed": 2, "pending": 1}
    assert [r["state"] for r in data["runs"]] == ["running", "running", "finished"]
    table = runner.invoke(cli, ["extract", "--status", f"file://{store}"],
                          catch_exceptions=False, env={"COLUMNS": "250"})
    assert table.exit_code == 0, table.output
    lines = [" ".join(line.replace("│", " ").split()) for line in table.output.splitlines()]
    assert "1/3 3 2 1 0 0" in lines and "2/3 2 0 0 1 1" in lines and "total 6 2 1 2 1" in lines
    assert any(third[0] in line and "yes: not refreshed" in line for line in lines)

    # The failed video's file is repaired: re-running shard 1/3 does it, its failure is gone.
    again = extract_features(index, ColorGradient(CG), store, dataset_ref="r", shard="1/3")
    assert again.written == (bad,)
    after = store_status(store)
    assert after.failed == () and after.shards[0].done == 3


def test_status_of_a_folder_that_is_no_store_is_an_error(tmp_path):
    from actrec.cli import cli

    out = CliRunner().invoke(cli, ["extract", "--status", str(tmp_path)])
    assert out.exit_code != 0 and "no feature store here" in str(out.exception or out.output)
    both = CliRunner().invoke(cli, ["extract", "synthetic", "--status", str(tmp_path)])
    assert both.exit_code == 2 and "--status STORE takes no DATASET" in both.output


def test_a_run_of_a_container_sharing_the_host_name_is_not_called_ended(tmp_path):
    """A run recorded by another pid namespace under this host name: its pid means nothing
    here, so it is not reported 'ended early' because no such pid runs here."""
    import socket

    from actrec.extract_status import start_run
    from actrec.io.features import FeatureStore

    store = tmp_path / "s.zarr"
    FeatureStore.open_or_create(store, dataset="d", split_scheme="s", classes=["a"],
                                splits={}, extractor="e", extractor_config={}, lookahead=0)
    start_run(store, ["v1"], None, 1, "e")  # this process: running
    (store / ".runs" / "other.json").write_text(json.dumps(
        {"host": socket.gethostname(), "node": "another-boot/4026531836", "pid": 999999,
         "started": time.time(), "finished": None, "shard": None, "videos": ["v2"]}))
    (store / ".runs" / "dead.json").write_text(json.dumps(
        {"host": socket.gethostname(), "pid": 999999, "started": time.time() + 1,
         "finished": None, "shard": None, "videos": ["v3"]}))
    states = [r["state"] for r in store_status(store).runs]
    assert states == ["running", "running", "ended early"], states
