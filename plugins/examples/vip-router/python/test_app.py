"""The shared cases (../cases.json) under pytest and the SDK's test host, plus what
only the Python build can check."""

import json
import pathlib

import pytest

from evhost_plugin import Config, Event, PluginError, testing
from app import VipRouter

CASES = json.loads((pathlib.Path(__file__).parent.parent / "cases.json").read_text())["cases"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_shared_case(case):
    event = Event(case["event"]["type"], case["event"]["data"])
    [actions] = testing.run(VipRouter, case["config"], [event])
    assert actions == case["expect"]["actions"]


def test_domains_are_required():
    with pytest.raises(PluginError, match="domains is required"):
        VipRouter(Config())
