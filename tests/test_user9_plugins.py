"""A third-party author's mistakes, through real entry points (dist-info folders on sys.path):
each is reported by `actrec plugins` before anything runs, and none breaks a built-in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

PLUGINS = """
    from dataclasses import dataclass

    from actrec.plugin_api import Dataset, FeatureExtractor, PluginConfig, TemporalModel


    class NoBatches(FeatureExtractor):
        name = "nobatches"
        lookahead = 0

        def dim(self):
            return 3

        def extract(self):  # the host calls extract(batches)
            yield None


    class DimWithArgument(NoBatches):
        name = "dimarg"

        def dim(self, frames):  # the host calls dim()
            return 3

        def extract(self, batches):
            yield from ()


    class SetupWithoutRuntime(DimWithArgument):
        name = "setupnoruntime"

        def dim(self):
            return 3

        def setup(self):  # the host calls setup(runtime)
            pass


    class Flexible(DimWithArgument):
        name = "flexible"

        def dim(self, *args, **kwargs):  # accepts the host's call: fine
            return 3

        def extract(self, batches, extra=None):
            yield from ()


    class BuildTooFew(TemporalModel):
        name = "buildtoofew"

        def build(self, input_dim):  # the host calls build(input_dim, num_classes)
            raise AssertionError("never called")


    class LoadWithArgument(Dataset):
        name = "loadarg"

        def load(self, root):  # the host calls load()
            raise AssertionError("never called")


    class LoadBug(Dataset):
        name = "loadbug"

        def load(self):
            return {}["no-such-key"]  # a bug in the plugin


    class ShadowsLstm(TemporalModel):
        name = "lstm"

        def build(self, input_dim, num_classes):
            raise RuntimeError("the third-party lstm was built")


    class Centred(FeatureExtractor):
        name = "centred"

        @dataclass(frozen=True)
        class Config(PluginConfig):
            window: int = 4
            centred: bool = False

        @property
        def lookahead(self):
            return self.config.window // 2 if self.config.centred else 0

        def dim(self):
            return 1

        def extract(self, batches):
            yield from ()
"""


def write_dist(site: Path, name: str, entry_points: str) -> None:
    info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


@pytest.fixture
def site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    write_dist(site, "user9-plugins", """
        [actrec.extractors]
        nobatches = user9_plugins:NoBatches
        dimarg = user9_plugins:DimWithArgument
        setupnoruntime = user9_plugins:SetupWithoutRuntime
        flexible = user9_plugins:Flexible
        centred = user9_plugins:Centred
        [actrec.models]
        buildtoofew = user9_plugins:BuildTooFew
        lstm = user9_plugins:ShadowsLstm
        [actrec.datasets]
        loadarg = user9_plugins:LoadWithArgument
        loadbug = user9_plugins:LoadBug
    """)
    (site / "user9_plugins.py").write_text(textwrap.dedent(PLUGINS))
    return site


def run_cli(args: list[str], site: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(site), **env}
    return subprocess.run([sys.executable, "-m", "actrec", *args], check=False,
                          capture_output=True, text=True, env=full_env, timeout=120)


def listing(site: Path) -> dict[tuple[str, str], dict]:
    result = run_cli(["plugins", "--json"], site)
    assert result.returncode == 0, result.stderr
    return {(row["name"], row["dist"]): row for row in json.loads(result.stdout)["plugins"]}


def test_methods_the_host_cannot_call_are_reported_as_broken(site: Path):
    rows = listing(site)
    expected = {
        "nobatches": "NoBatches.extract(self) cannot be called as extract(batches)",
        "dimarg": "DimWithArgument.dim(self, frames) cannot be called as dim()",
        "setupnoruntime": "SetupWithoutRuntime.setup(self) cannot be called as setup(runtime)",
        "buildtoofew": ("BuildTooFew.build(self, input_dim) cannot be called as "
                        "build(input_dim, num_classes)"),
        "loadarg": "LoadWithArgument.load(self, root) cannot be called as load()",
    }
    for name, message in expected.items():
        row = rows[(name, "user9-plugins")]
        assert row["status"] == "broken", row
        assert message in row["error"], row["error"]
    assert rows[("flexible", "user9-plugins")]["status"] == "ok"


def test_a_broken_signature_is_refused_before_a_store_is_written(tmp_path: Path, site: Path):
    home = tmp_path / "home"
    result = run_cli(["extract", "synthetic", "--extractor", "nobatches"], site,
                     ACTREC_HOME=str(home))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert ("extractor 'nobatches' (from user9-plugins 1.0) is broken: PluginError: "
            "NoBatches.extract(self) cannot be called as extract(batches)") in result.stderr
    assert not (home / "features").exists()


def test_a_third_party_plugin_never_replaces_or_breaks_a_builtin(site: Path):
    rows = listing(site)
    assert rows[("lstm", "actrec")]["status"] == "ok"
    theirs = rows[("lstm", "user9-plugins")]
    assert theirs["status"] == "conflict"
    assert "built-in" in theirs["error"] and "user9-plugins" in theirs["error"]
    # The built-in is the one a command gets: it builds (the third party's would raise).
    code = ("from actrec import registry; m = registry.create('models', 'lstm', {'hidden': '4'})"
            ".build(3, 2); print(type(registry.plugin_class('models', 'lstm')).__module__, "
            "registry.plugin_class('models', 'lstm').__module__)")
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(site)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1].startswith("actrec_plugins.")


def test_listing_says_whether_an_extractor_with_a_lookahead_property_is_causal(site: Path):
    rows = listing(site)
    # lookahead is a property: causal with the default options (centred=False)
    assert rows[("centred", "user9-plugins")]["causal"] is True
    builtin = {name: row for (name, dist), row in rows.items() if dist == "actrec"}
    assert builtin["flow"]["causal"] is True  # causal unless -x centred=true
    assert builtin["colorgrad"]["causal"] is True


def test_a_bug_in_a_datasets_load_is_one_message_naming_it_and_where(tmp_path: Path, site: Path):
    for command in (["datasets", "info", "loadbug"], ["extract", "loadbug"]):
        result = run_cli(command, site, ACTREC_HOME=str(tmp_path / "home"))
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.strip() == (
            f"Error: dataset 'loadbug' failed to load: KeyError: 'no-such-key' (at "
            f"{site / 'user9_plugins.py'}:{_line_of(site, 'no-such-key')} in load)")
    assert not (tmp_path / "home" / "features").exists()


def _line_of(site: Path, text: str) -> int:
    lines = (site / "user9_plugins.py").read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line)


def test_listing_gives_each_option_with_its_default_as_typed(site: Path):
    rows = listing(site)
    assert rows[("centred", "user9-plugins")]["defaults"] == {"window": 4, "centred": False}
    assert rows[("lstm", "actrec")]["defaults"]["hidden"] == 128
    table = run_cli(["plugins"], site, COLUMNS="200")
    assert table.returncode == 0
    line = next(line for line in table.stdout.splitlines() if "│ centred" in line)
    assert "window=4, centred=false" in line
    assert "extractors" in table.stdout and "models" in table.stdout  # a table per kind
