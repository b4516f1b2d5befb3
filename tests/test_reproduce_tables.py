"""The papers' tables as data files: every shipped file loads, its numbers agree with the
paper's own cross-references, and a malformed file is an error naming the file and the key."""

from __future__ import annotations

import re

import pytest

from actrec.errors import ConfigError
from actrec.paper_tables import TABLE_DIR, available, load_table


def _paper(table_id: str) -> dict[tuple[str, ...], list[float]]:
    table = load_table(table_id)
    return {tuple(r["labels"]): list(r["paper"]) for r in table.rows}


def test_every_shipped_table_loads_with_a_citation():
    assert available() == ["ddlstm-table1", "recassist-table4", "recassist-table5",
                            "recassist-table6", "recassist-table7", "recassist-table8"]
    for name in available():
        table = load_table(name)
        assert table.id == name
        assert table.source["table"] in table.title
        assert table.source["caption"] and table.source["paper"]


def test_ddlstm_table1_numbers_as_typed_from_the_paper():
    t = _paper("ddlstm-table1")
    assert len(t) == 18
    assert t[("Joint", "DDLSTM", "50 Salads", "MPII Cooking 2")] == [47.1, 41.5]
    assert t[("D1,D2", "LSTM", "50 Salads", "MPII Cooking 2")] == [4.4, 38.7]
    assert t[("D2,D1", "LSTM", "Breakfast", "50 Salads")] == [25.4, 8.5]
    assert t[("Joint", "BNLSTM", "Breakfast", "MPII Cooking 2")] == [22.5, 30.9]
    # The single-dataset rows repeat a dataset's baseline in every pair it is part of.
    none = {k[2:]: v for k, v in t.items() if k[1] == "None"}
    assert none[("50 Salads", "MPII Cooking 2")][0] == none[("Breakfast", "50 Salads")][1]
    assert none[("50 Salads", "MPII Cooking 2")][1] == none[("Breakfast", "MPII Cooking 2")][1]
    assert none[("Breakfast", "50 Salads")][0] == none[("Breakfast", "MPII Cooking 2")][0]
    # Sec. 5.1's gains of the DDLSTM over the next best method: 3.7/3.8 and 4.2/1.0.
    for pair, gains in ((("Breakfast", "50 Salads"), (3.7, 3.8)),
                        (("Breakfast", "MPII Cooking 2"), (4.2, 1.0))):
        rows = {k[:2]: v for k, v in t.items() if k[2:] == pair}
        best = rows[("Joint", "DDLSTM")]
        for col, gain in enumerate(gains):
            runner_up = max(v[col] for k, v in rows.items() if k != ("Joint", "DDLSTM"))
            assert round(best[col] - runner_up, 1) == gain


def test_recurrent_assistance_tables_agree_with_each_other():
    t4 = _paper("recassist-table4")
    lstm = {name: [t4[(name, str(s))][1] for s in range(4)]
            for name in ("Breakfast", "50 Salads", "MPII")}
    assert [t4[("Breakfast", str(s))][0] for s in range(4)] == [22.00, 16.19, 19.90, 24.18]
    for table, name in (("recassist-table6", "Breakfast"), ("recassist-table7", "50 Salads"),
                        ("recassist-table8", "MPII")):
        t = _paper(table)
        assert [t[(str(s),)][0] for s in range(4)] == lstm[name]  # the No transfer column
        for col in range(3):
            mean = sum(t[(str(s),)][col] for s in range(4)) / 4
            if (table, col) == ("recassist-table8", 1):
                assert t[("Avg.",)][col] == 39.24 and round(mean, 2) == 39.46  # the paper's slip
            else:
                assert abs(t[("Avg.",)][col] - mean) < 0.006
    t5 = _paper("recassist-table5")
    assert t5[("N/A", "N/A")] == [lstm["Breakfast"][1]]
    assert t5[("Transfer", "Concat")] == [_paper("recassist-table6")[("1",)][1]]
    seeds = {tuple(load_table("recassist-table5").rows[c.row]["labels"]): c.settings.get("seeds", 1)
             for c in load_table("recassist-table5").cells}
    assert [k for k, v in seeds.items() if v == 3] == [
        ("Joint", "Random"), ("Joint", "Multiple Random"), ("Transfer", "Random"),
        ("Transfer", "Multiple Random")]


def _write(tmp_path, text: str):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    return path


def _shipped(name: str) -> str:
    return (TABLE_DIR / f"{name}.toml").read_text()


@pytest.mark.parametrize("edit, key", [
    # one number too few in the fourth row
    (lambda s: s.replace("paper = [4.4, 38.7]", "paper = [4.4]"), "rows[3].paper"),
    (lambda s: s.replace('method = "lstm-joint"', 'method = "lstm-jointt"', 1),
     "rows[1] x columns[0]: method"),
    (lambda s: s.replace('caption = "', 'captions = "'), "source.caption"),
    (lambda s: s.replace('report = "mean"', 'report = "average"'), "report"),
    (lambda s: s.replace('protocol = "joint"', 'protocol = "jointly"', 1),
     "methods.lstm-joint.protocol"),
    (lambda s: s.replace('score = "D1"', 'score = "D1"\nmethod = "none"', 1), "rows[0].method"),
    (lambda s: s.replace("[[rows]]", "[[rows]]\nsplit = 2", 1), "rows[0] x columns[0]: split"),
    (lambda s: s.replace('labels = ["Single", "None", "50 Salads", "MPII Cooking 2"]',
                         'labels = ["Single", "None"]'), "rows[0].labels"),
])
def test_malformed_table_names_file_and_key(tmp_path, edit, key):
    text = edit(_shipped("ddlstm-table1"))
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_table(path)
    message = str(err.value)
    assert str(path) in message
    assert f": {key}:" in message, message


def test_invalid_toml_and_unknown_table(tmp_path):
    path = _write(tmp_path, "id = [\n")
    with pytest.raises(ConfigError, match=re.escape(str(path)) + " is not valid TOML"):
        load_table(path)
    with pytest.raises(ConfigError, match="no paper table 'ddlstm-table9'; shipped tables: "
                                          "ddlstm-table1, recassist-table4"):
        load_table("ddlstm-table9")


def test_cli_lists_the_tables_and_names_a_bad_file(tmp_path):
    import json
    import subprocess
    import sys

    listed = subprocess.run([sys.executable, "-m", "actrec", "reproduce", "--list", "--json"],
                            check=False, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["id"], r["table"], r["cells"]) for r in rows] == [
        ("ddlstm-table1", "Table 1", 36), ("recassist-table4", "Table 4", 24),
        ("recassist-table5", "Table 5", 9), ("recassist-table6", "Table 6", 12),
        ("recassist-table7", "Table 7", 12), ("recassist-table8", "Table 8", 12)]
    path = _write(tmp_path, _shipped("recassist-table4").replace("paper = [22.00, 30.78]",
                                                                 "paper = [22.00, 30.78, 1.0]"))
    bad = subprocess.run([sys.executable, "-m", "actrec", "reproduce", str(path), "--preset",
                          "tiny", "--root", str(tmp_path)], check=False, capture_output=True,
                         text=True,
                         timeout=120)
    assert bad.returncode == 1
    assert bad.stderr.strip() == (f"Error: paper table {path}: rows[0].paper: expected 2 numbers "
                                  f"(one per column), got [22.0, 30.78, 1.0]")
    assert not (tmp_path / "reproduce").exists()  # refused before anything was made
