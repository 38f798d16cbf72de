"""The shared cases (../cases.json) under pytest and the SDK's test host, plus what
only the Python build can check."""

import json
import pathlib

import pytest

from evhost_plugin import Config, Event, PluginError, testing
from app import PiiRedactor

CASES = json.loads((pathlib.Path(__file__).parent.parent / "cases.json").read_text())["cases"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_shared_case(case):
    event = Event(case["event"]["type"], case["event"]["data"])
    [actions] = testing.run(PiiRedactor, case["config"], [event])
    assert actions == case["expect"]["actions"]


def test_a_flag_that_is_not_true_or_false_is_refused():
    with pytest.raises(PluginError, match="recipients"):
        PiiRedactor(Config({"recipients": "yes"}))
