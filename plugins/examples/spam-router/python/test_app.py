"""The shared cases (../cases.json) under pytest and the SDK's test host, plus what
only the Python build can check."""

import json
import pathlib

import pytest

from evhost_plugin import Config, Event, PluginError, testing
from app import SpamRouter

CASES = json.loads((pathlib.Path(__file__).parent.parent / "cases.json").read_text())["cases"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_shared_case(case):
    event = Event(case["event"]["type"], case["event"]["data"])
    [actions] = testing.run(SpamRouter, case["config"], [event])
    assert actions == case["expect"]["actions"]


def test_routed_spam_is_counted():
    host = testing.reset()
    event = Event(CASES[0]["event"]["type"], CASES[0]["event"]["data"])
    testing.run(SpamRouter, {}, [event])
    assert host.counters == {"spam_routed": 1}


def test_a_threshold_that_is_not_a_number_is_refused():
    with pytest.raises(PluginError, match="threshold"):
        SpamRouter(Config({"threshold": "high"}))
