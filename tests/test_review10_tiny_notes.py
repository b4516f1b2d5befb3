"""``reproduce --preset tiny`` notes why its BNLSTM/DDLSTM cells sit below the LSTM ones (and
that trained cells re-estimate their batch norms) in the tables that have such cells
(ddlstm-table1), not in the Recurrent Assistance tables, whose cells are all LSTMs: there the
note spoke of cells the table does not have."""

from __future__ import annotations

from pathlib import Path

import pytest

from actrec.paper_tables import load_table
from actrec.reproduce import PRESETS, Plan, build_result


def _notes(table_id: str) -> list[str]:
    table = load_table(table_id)
    plan = Plan(table, PRESETS["tiny"], Path("/nowhere"), "head", {})
    for cell in table.cells:  # no unit ran: every cell failed, the notes are what is looked at
        plan.cells[(cell.row, cell.column)] = {"samples": [], "reason": "not run here"}
    return build_result(plan, {})["notes"]


def _bn_notes(notes: list[str]) -> list[str]:
    return [n for n in notes if "batch-norm" in n or "BNLSTM" in n]


def test_a_table_with_batch_norm_cells_says_why_they_sit_below():
    (note,) = _bn_notes(_notes("ddlstm-table1"))
    assert note.startswith("tiny: each trained cell re-estimates its batch-norm statistics")
    assert "BNLSTM/DDLSTM cells still sit below LSTM ones here" in note


@pytest.mark.parametrize("table_id", ["recassist-table4", "recassist-table5",
                                      "recassist-table6", "recassist-table7",
                                      "recassist-table8"])
def test_a_table_of_lstm_cells_only_has_no_batch_norm_note(table_id):
    models = {m.model for m in load_table(table_id).methods.values() if m.kind == "train"}
    assert models == {"lstm"}
    assert _bn_notes(_notes(table_id)) == []
