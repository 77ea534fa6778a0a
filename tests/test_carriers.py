"""Carrier tables: loading, validation with every problem listed, transit lookups."""

from __future__ import annotations

import json
import math
from importlib import resources

import pytest

from engine.core.carriers import default_carriers, load_carriers, loads_carriers, parse_carriers
from engine.core.errors import InvalidArgument
from engine.core.network import Destination, Network
from engine.core.types import Node

GOOD = """
version: 1
regions:
  north: ["1", "2"]
  south: ["3"]
  islands: []
postal_centroids:
  "10": [50.0, 10.0]
transfer_service: truck
service_levels:
  - name: standard
    delivery_days: [Mon, Tue, Wed, Thu, Fri]
    transit:
      - {from: north, to: north, days: 1}
      - {from: north, to: "*", days: 3}
      - {from: "*", to: islands, days: 6}
    distance_bands:
      - {max_km: 100, days: 1}
      - {max_km: 500, days: 2}
    default_days: 4
  - name: truck
    internal: true
    default_days: 2
"""


def violations(text: str, fmt: str = "yaml") -> dict[str, str]:
    with pytest.raises(InvalidArgument) as info:
        loads_carriers(text, fmt=fmt)
    assert info.value.reason == "INVALID_CARRIERS"
    return {v.field: v.description for v in info.value.violations}


def test_a_good_file_loads():
    table = loads_carriers(GOOD)
    assert [level.name for level in table.service_levels] == ["standard", "truck"]
    assert [level.name for level in table.customer_levels] == ["standard"]
    assert table.transfer_service == "truck"
    assert table.regions == ("north", "south", "islands")
    assert table.region_of_postal("2 9999") == "north"
    assert table.centroid_of_postal("10115") == (50.0, 10.0)
    assert table.region_of_postal("99999") is None


def test_transit_lookup_order_pair_then_wildcards_then_bands_then_default():
    level = loads_carriers(GOOD).level("standard")
    assert level.transit_days("north", "north", 5000.0) == 1  # exact pair beats everything
    assert level.transit_days("north", "south", 5000.0) == 3  # (north, *)
    assert level.transit_days("south", "islands", 5000.0) == 6  # (*, islands)
    assert level.transit_days("south", "north", 50.0) == 1  # no pair: distance band
    assert level.transit_days("south", "north", 300.0) == 2
    assert level.transit_days("south", "north", 900.0) == 4  # beyond the bands: default
    assert level.transit_days("south", "north", math.inf) == 4  # no distance: default
    # An unknown region matches wildcard entries only.
    assert level.transit_days(None, "islands", 50.0) == 6
    assert level.transit_days("north", None, 50.0) == 3


def test_the_compiled_network_agrees_with_the_reference_lookup():
    table = loads_carriers(GOOD)
    nodes = [Node("a", region="north"), Node("b", region="south"), Node("c", postal_prefix="35"), Node("d")]
    net = Network(nodes, table)
    assert [net.region_names[r] if r < len(net.region_names) else None for r in net.region] == [
        "north",
        "south",
        "south",
        None,
    ]
    svc = net.services[net.service_index["standard"]]
    names = (*net.region_names, None)
    for o in range(net.n_regions):
        for dest in range(net.n_regions):
            days = svc.matrix[o * net.n_regions + dest]
            expected = table.level("standard").pair_days(names[o] or "*", names[dest] or "*")
            assert days == (-1 if expected is None else expected)


def test_json_files_load_too(tmp_path):
    data = {
        "regions": {"all": ["0", "1"]},
        "service_levels": [{"name": "ground", "transit": [{"from": "all", "to": "all", "days": 2}]}],
    }
    path = tmp_path / "carriers.json"
    path.write_text(json.dumps(data))
    table = load_carriers(path)
    assert table.level("ground").transit_days("all", "all", 1.0) == 2
    assert parse_carriers(data) == table


def test_the_demo_sample_is_shipped_with_the_package():
    assert resources.files("engine").joinpath("data/carriers.yaml").is_file()
    table = default_carriers()
    assert {"standard", "express"} <= {level.name for level in table.customer_levels}
    assert table.transfer_service == "transfer"
    assert table.region_of_postal("10001") == "east"
    assert table.region_of_postal("94103") == "west"


def test_yaml_syntax_errors_name_the_place():
    found = violations("service_levels: [\n  - name: x\n")
    (message,) = found.values()
    assert "not valid YAML" in message and "line" in message


def test_json_syntax_errors_are_reported():
    found = violations("{", fmt="json")
    assert "not valid JSON" in next(iter(found.values()))


def test_a_document_that_is_not_a_mapping():
    assert "" in violations("- just\n- a list\n")


def test_every_problem_of_a_bad_file_is_listed_with_its_path():
    bad = """
version: 2
region: {}
regions:
  north: [01, "1"]
  south: ["1", "2"]
postal_centroids:
  "10": [95.0, 10.0]
transfer_service: boat
service_levels:
  - name: Standard Ground
    speed: fast
    delivery_days: [Mon, Funday]
    transit:
      - {from: north, to: nowhere, days: 1}
      - {from: north, to: south, days: -1}
      - {from: north, to: north, days: 1}
      - {from: north, to: north, days: 2}
    distance_bands:
      - {max_km: 500, days: 1}
      - {max_km: 100, days: 2}
  - name: empty
"""
    found = violations(bad)
    assert set(found) == {
        "version",
        "region",
        "regions.north[0]",
        "regions.south[0]",
        "postal_centroids.10",
        "transfer_service",
        "service_levels[0].name",
        "service_levels[0].speed",
        "service_levels[0].delivery_days[1]",
        "service_levels[0].transit[0].to",
        "service_levels[0].transit[1].days",
        "service_levels[0].transit[3]",
        "service_levels[0].distance_bands[1].max_km",
        "service_levels[1]",
    }
    assert "leading zeros" in found["regions.north[0]"]
    assert "already in region 'north'" in found["regions.south[0]"]
    assert "declare it under regions" in found["service_levels[0].transit[0].to"]
    assert "repeats" in found["service_levels[0].transit[3]"]


def test_a_file_without_service_levels():
    assert "service_levels" in violations("regions: {a: []}\n")


def test_duplicate_service_level_names():
    text = "service_levels:\n  - {name: a, default_days: 1}\n  - {name: a, default_days: 2}\n"
    assert "defined twice" in violations(text)["service_levels[1].name"]


def test_the_error_message_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("service_levels: []\n")
    with pytest.raises(InvalidArgument) as info:
        load_carriers(path)
    assert str(path) in info.value.message


def test_postal_lookup_prefers_the_longest_prefix():
    text = """
regions:
  metro: ["100"]
  state: ["1"]
postal_centroids:
  "1": [42.0, -75.0]
  "100": [40.75, -73.99]
service_levels:
  - {name: ground, default_days: 3}
"""
    table = loads_carriers(text)
    net = Network([], table)
    assert table.region_of_postal("10001") == "metro"
    assert table.region_of_postal("12345") == "state"
    resolved = net.resolve(Destination(postal_code="10001"))
    assert resolved.has_coords and resolved.region == net.region_index["metro"]
    assert math.isclose(math.degrees(resolved.lat), 40.75)
    unknown = net.resolve(Destination(postal_code="99999"))
    assert not unknown.has_coords and unknown.region == net.unknown_region
