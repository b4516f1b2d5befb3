"""Plugin discovery through real entry points: dist-info folders written on sys.path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from actrec import registry
from actrec.errors import ConfigError, PluginError
from actrec.plugin_api import PluginConfig

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "actrec-grayhist"


def write_dist(site: Path, name: str, entry_points: str, version: str = "1.0") -> None:
    """A minimal installed distribution: METADATA plus entry_points.txt."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A site folder with the example plugin, a broken plugin and an invalid plugin."""
    site = tmp_path / "site"
    write_dist(site, "actrec-grayhist", "[actrec.extractors]\ngrayhist = actrec_grayhist:GrayHistogram\n")
    write_dist(site, "broken-plugin", "[actrec.models]\nexploding = exploding_plugin:Model\n")
    (site / "exploding_plugin.py").write_text("raise RuntimeError('this plugin is broken on purpose')\n")
    write_dist(site, "misnamed-plugin", "[actrec.datasets]\nwrongname = misnamed_plugin:Data\n")
    (site / "misnamed_plugin.py").write_text(textwrap.dedent("""
        from dataclasses import dataclass
        from actrec.plugin_api import Dataset, PluginConfig

        class Data(Dataset):
            name = "something-else"

            @dataclass(frozen=True)
            class Config(PluginConfig):
                root: str = ""

            def load(self):
                raise NotImplementedError
    """))
    return site


def run_cli(args: list[str], site: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(EXAMPLE)]), **env}
    return subprocess.run([sys.executable, "-m", "actrec", *args], capture_output=True,
                          text=True, env=full_env, timeout=120)


def rows_by_name(stdout: str) -> dict[str, dict]:
    return {row["name"]: row for row in json.loads(stdout)["plugins"]}


def test_builtins_are_discovered_without_importing_them():
    code = ("import sys; from actrec import registry; d = registry.discover(); "
            "print(sorted(r.name for r in d.records if r.builtin)); "
            "print([m for m in sys.modules if m.startswith('actrec_plugins.')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    names = eval(out[0])  # noqa: S307 - our own printed list
    assert {"synthetic", "colorgrad", "lstm", "ddlstm", "bnlstm", "gru"} <= set(names)
    assert out[1] == "[]"  # nothing of the plugins was imported


def test_third_party_plugin_listed_used_and_broken_reported(site: Path):
    result = run_cli(["plugins", "--json"], site)
    assert result.returncode == 0, result.stderr
    rows = rows_by_name(result.stdout)
    assert rows["grayhist"]["status"] == "ok"
    assert rows["grayhist"]["dist"] == "actrec-grayhist"
    assert rows["grayhist"]["options"] == ["bins", "fps"]
    assert rows["exploding"]["status"] == "broken"
    assert "this plugin is broken on purpose" in rows["exploding"]["error"]
    assert rows["wrongname"]["status"] == "broken"
    assert "registered as 'wrongname'" in rows["wrongname"]["error"]
    assert rows["lstm"]["status"] == "ok"  # the built-ins still work beside broken plugins

    # The table form lists them too, and the CLI still exits 0.
    table = run_cli(["plugins"], site)
    assert table.returncode == 0 and "grayhist" in table.stdout and "broken" in table.stdout

    # Use it: load through the registry in a process that sees the site folder.
    code = ("import numpy as np; from actrec import registry; "
            "ext = registry.create('extractors', 'grayhist', {'bins': '4'}); "
            "frames = np.zeros((2, 8, 8, 3), np.uint8); frames[1] = 255; "
            "print(np.concatenate(list(ext.extract([frames]))).tolist())")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(EXAMPLE)])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True).stdout
    assert json.loads(out) == [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]


def test_environment_limits_third_party_loading(site: Path):
    rows = rows_by_name(run_cli(["plugins", "--json"], site, ACTREC_NO_PLUGIN_AUTOLOAD="1").stdout)
    assert rows["grayhist"]["status"] == "skipped"
    assert rows["lstm"]["status"] == "ok"  # built-ins always load
    rows = rows_by_name(run_cli(["plugins", "--json"], site, ACTREC_PLUGINS="actrec_grayhist").stdout)
    assert rows["grayhist"]["status"] == "ok"
    assert rows["exploding"]["status"] == "skipped"


def test_same_name_from_two_distributions_is_an_error_naming_both(tmp_path: Path, site: Path):
    write_dist(site, "another-grayhist", "[actrec.extractors]\ngrayhist = other_mod:Thing\n")
    result = run_cli(["plugins", "--json"], site)
    rows = [r for r in json.loads(result.stdout)["plugins"] if r["name"] == "grayhist"]
    assert {r["status"] for r in rows} == {"conflict"}
    assert "actrec-grayhist" in rows[0]["error"] and "another-grayhist" in rows[0]["error"]
    used = run_cli(["extract", "synthetic", "--extractor", "grayhist"], site)
    assert used.returncode == 1
    assert "registered by more than one distribution" in used.stderr
    assert "actrec-grayhist" in used.stderr and "another-grayhist" in used.stderr


def test_unknown_plugin_and_option_messages():
    with pytest.raises(PluginError, match="unknown model 'nosuch'.*lstm"):
        registry.plugin_class("models", "nosuch")
    with pytest.raises(ConfigError, match="unknown option 'hiden' for model 'lstm'.*hidden"):
        registry.create("models", "lstm", {"hiden": "3"})
    with pytest.raises(ConfigError, match="option 'hidden' for model 'lstm': expected an integer"):
        registry.create("models", "lstm", {"hidden": "many"})


def test_config_coercion():
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class C(PluginConfig):
        n: int = 1
        x: float = 0.5
        flag: bool = False
        path: Path | None = None
        names: tuple[str, ...] = ()

    c = C.from_options({"n": "3", "x": "2.5", "flag": "yes", "path": "/a/b", "names": "p,q"})
    assert c == C(3, 2.5, True, Path("/a/b"), ("p", "q"))
    assert c.to_dict() == {"n": 3, "x": 2.5, "flag": True, "path": "/a/b", "names": ["p", "q"]}
    assert C.from_options({"path": "none"}).path is None
    with pytest.raises(ConfigError, match="expected a boolean"):
        C.from_options({"flag": "maybe"})
    with pytest.raises(ConfigError, match="expected an integer"):
        C.from_options({"n": 2.5})

    @dataclass(frozen=True)
    class Unsupported(PluginConfig):
        table: dict = None  # type: ignore[assignment]

    with pytest.raises(ConfigError, match="option 'table'.*not supported"):
        Unsupported.from_options({"table": "a=1"})


def test_dataset_references_name_one_store_whatever_the_spelling(tmp_path, monkeypatch):
    from actrec.refs import canonical_ref, parse_dataset_ref, resolve_store

    monkeypatch.setenv("ACTREC_HOME", str(tmp_path))
    assert parse_dataset_ref("synthetic:kitchen=b, seed=1") == ("synthetic", {"kitchen": "b",
                                                                              "seed": "1"})
    assert canonical_ref("synthetic:seed=1", {"kitchen": "b", "root": "/data"}) == \
        "synthetic:kitchen=b,seed=1"
    assert canonical_ref("synthetic") == "synthetic"
    same = {resolve_store(r, "colorgrad") for r in
            ("synthetic:kitchen=b,seed=1", "synthetic:seed=1,kitchen=b")}
    assert len(same) == 1 and resolve_store("synthetic:seed=2,kitchen=b", "colorgrad") not in same
    assert resolve_store(str(tmp_path / "x.zarr"), "colorgrad") == tmp_path / "x.zarr"
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_dataset_ref("synthetic:kitchen")


THIRD_PARTY_DATASET = """
    from dataclasses import dataclass
    from pathlib import Path

    import numpy as np

    from actrec.plugin_api import Dataset, DatasetIndex, PluginConfig, Split, VideoRecord


    class MyData(Dataset):
        \"\"\"Classes from <root>/classes.txt; one 5-frame video of the first class.\"\"\"

        name = "my-data"

        @dataclass(frozen=True)
        class Config(PluginConfig):
            root: Path | None = None

        def load(self):
            given = self.config.root  # filled in by actrec: never None, always absolute
            assert isinstance(given, Path) and given.is_absolute(), given
            root = self.existing_root()  # DataError naming it and ACTREC_DATA_MY_DATA if absent
            assert root == given
            classes = tuple((root / "classes.txt").read_text().split())
            video = VideoRecord("v", "p", np.zeros(5, np.int64), 15.0)
            return DatasetIndex(name=self.name, classes=classes, videos={"v": video},
                                splits={"1": Split("1", ("v",), ())}, fps=15.0, background=0)
"""


def test_third_party_dataset_gets_the_data_root_from_actrec(tmp_path: Path, site: Path):
    """ACTREC_DATA_<NAME>, the workspace fallback and --root reach a third-party dataset
    plugin that does nothing about them itself."""
    write_dist(site, "actrec-mydata", "[actrec.datasets]\nmy-data = mydata_plugin:MyData\n")
    (site / "mydata_plugin.py").write_text(textwrap.dedent(THIRD_PARTY_DATASET))

    def classes_in(folder: Path, names: str) -> Path:
        folder.mkdir(parents=True)
        (folder / "classes.txt").write_text(names)
        return folder

    def info(*args: str, **env: str) -> subprocess.CompletedProcess:
        env = {"ACTREC_HOME": str(tmp_path / "home"), "ACTREC_DATA_MY_DATA": "", **env}
        return run_cli(["datasets", "info", "my-data", *args, "--json"], site, **env)

    classes_in(tmp_path / "home" / "data" / "my-data", "home_bg home_a")
    env_root = classes_in(tmp_path / "env", "env_bg env_a")
    flag_root = classes_in(tmp_path / "flag", "flag_bg flag_a")
    for result, first in ((info(), "home_bg"),  # the workspace fallback
                          (info(ACTREC_DATA_MY_DATA=str(env_root)), "env_bg"),  # the variable
                          (info("--root", str(flag_root), ACTREC_DATA_MY_DATA=str(env_root)),
                           "flag_bg")):  # --root wins
        assert result.returncode == 0, result.stderr
        data = json.loads(result.stdout)
        assert list(data["frames_per_class"]) == [first, first.replace("bg", "a")]
        assert data["background"] == first
    missing = info(ACTREC_DATA_MY_DATA=str(tmp_path / "nowhere"))
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert f"{tmp_path / 'nowhere'}" in missing.stderr and "ACTREC_DATA_MY_DATA" in missing.stderr


BAD_EXTRACTORS = """
    from dataclasses import dataclass

    from actrec.plugin_api import FeatureExtractor, PluginConfig


    @dataclass(frozen=True)
    class Window(PluginConfig):
        window: int = 3


    class HalfWindow(FeatureExtractor):
        name = "halfwindow"
        Config = Window

        @property
        def lookahead(self):
            return self.config.window / 2  # a float: not a number of frames

        def dim(self):
            return 1

        def extract(self, batches):
            yield from ()


    class TextLookahead(HalfWindow):
        name = "textlookahead"
        lookahead = "2"


    class Boom(HalfWindow):
        name = "boom"
        lookahead = 0

        def __init__(self, config=None):
            super().__init__(config)
            self.size = self.config.window + "frames"
"""


def test_badly_typed_extractors_give_one_message_and_write_nothing(tmp_path: Path, site: Path):
    write_dist(site, "actrec-bad", "[actrec.extractors]\nhalfwindow = bad_extractors:HalfWindow\n"
               "textlookahead = bad_extractors:TextLookahead\nboom = bad_extractors:Boom\n")
    (site / "bad_extractors.py").write_text(textwrap.dedent(BAD_EXTRACTORS))
    empty = tmp_path / "gtea"
    empty.mkdir()
    home = tmp_path / "home"

    def extract(extractor: str) -> subprocess.CompletedProcess:
        return run_cli(["extract", "gtea", "--root", str(empty), "--extractor", extractor],
                       site, ACTREC_HOME=str(home))

    half = extract("halfwindow")
    assert half.returncode == 1 and "Traceback" not in half.stderr
    assert half.stderr.strip() == ("Error: extractor 'halfwindow': lookahead must be an integer "
                                   ">= 0 (the number of future frames a frame's feature depends "
                                   "on), got 1.5 (float)")
    text = extract("textlookahead")
    assert text.returncode == 1 and "Traceback" not in text.stderr
    assert "TextLookahead.lookahead must be an integer >= 0" in text.stderr
    assert "got '2'" in text.stderr
    boom = extract("boom")
    assert boom.returncode == 1 and "Traceback" not in boom.stderr
    assert "extractor 'boom' failed to start with options {'window': 3}: TypeError" in boom.stderr
    assert not home.exists()  # no store, not even an empty folder
