"""The result codes the finishing scripts document are the ones
greenq.outcomes names, and nothing else."""

from __future__ import annotations

import re

import pytest

from greenq import scripts
from greenq.outcomes import Outcome


@pytest.mark.parametrize("name", ["complete", "fail", "give_back"])
def test_every_code_a_finishing_script_documents_is_a_named_outcome(name):
    header = scripts.load(name).source.split("]]", 1)[0]
    output = header.split("Output:", 1)[1]
    words = "done|succeeded|retried|failed|given|cancelled|no|lease"
    codes = {int(code) for code in re.findall(rf"(-?\d+) (?:{words})", output)}
    assert codes and codes <= {outcome.value for outcome in Outcome}, output
    assert {Outcome.LEASE_LOST, Outcome.NO_RECORD, Outcome.DONE, Outcome.CANCELLED} <= codes
