"""Carrier service levels: how many delivery days a parcel takes, and when carriers deliver.

A carrier table comes from a YAML or JSON file (or the same structure sent
through the NetworkService)::

    version: 1
    regions:                      # carrier region -> postal prefixes (longest match wins)
      east: ["0", "1", "2"]
      west: ["8", "9"]
      islands: []                 # a region nodes name but no postal code maps to
    postal_centroids:             # optional: where a postal prefix is, for distances
      "100": [40.75, -73.99]
    transfer_service: standard    # optional: the level that moves stock between nodes
    service_levels:
      - name: standard
        delivery_days: [Mon, Tue, Wed, Thu, Fri]
        transit:                  # by (origin region, destination region); "*" = any
          - {from: east, to: east, days: 2}
          - {from: "*", to: west, days: 5}
        distance_bands:           # by distance, when no region pair matches
          - {max_km: 300, days: 1}
          - {max_km: 1500, days: 3}
        default_days: 6           # when neither matches
      - name: express
        ...
        internal: false           # true: used for transfers only, never offered

Transit days count carrier delivery days after the ship day: 1 day on a
Friday with Monday-to-Friday delivery arrives on Monday; 0 means delivered on
the ship day itself (the first delivery day from it).

Lookup order for a parcel from region O to region D over distance km: the
pair (O, D), then (O, *), then (*, D), then (*, *); then the first distance
band whose ``max_km`` covers the distance; then ``default_days``; otherwise
the level is not offered for that node. An end whose region is unknown (a
node region or postal code the table does not map) matches ``*`` entries
only; an end without coordinates has no distance, so no band applies.

Loading checks the whole file and raises one InvalidArgument (reason
``INVALID_CARRIERS``) listing every problem with its path in the file
(``service_levels[1].transit[0].days``), so a file is fixed in one pass.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

import yaml

from engine.core.errors import FieldViolation, InvalidArgument
from engine.core.geo import longest_prefix

__all__ = [
    "ANY_REGION",
    "CarrierTable",
    "DistanceBand",
    "MAX_TRANSIT_DAYS",
    "ServiceLevel",
    "default_carriers",
    "dump_carriers",
    "load_carriers",
    "loads_carriers",
    "parse_carriers",
    "weekday_mask",
]

ANY_REGION = "*"
MAX_TRANSIT_DAYS = 60
MAX_POSTAL_PREFIX = 10

_WEEKDAYS = {"mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6, "sun": 7}
_NAME = re.compile(r"[a-z0-9][a-z0-9_\-]{0,31}")
_REGION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-.]{0,63}")
_PREFIX = re.compile(rf"[A-Z0-9]{{1,{MAX_POSTAL_PREFIX}}}")
_TOP_KEYS = frozenset({"version", "regions", "postal_centroids", "transfer_service", "service_levels"})
_LEVEL_KEYS = frozenset(
    {"name", "delivery_days", "transit", "distance_bands", "default_days", "internal", "description"}
)


def weekday_mask(weekdays: tuple[int, ...]) -> int:
    """Bit (ISO weekday - 1) set for each weekday."""
    return sum(1 << (d - 1) for d in set(weekdays))


@dataclass(frozen=True, slots=True)
class DistanceBand:
    max_km: float
    days: int


@dataclass(frozen=True, slots=True)
class ServiceLevel:
    name: str
    transit: tuple[tuple[str, str, int], ...] = ()  # (origin region, destination region, days)
    distance_bands: tuple[DistanceBand, ...] = ()  # ascending max_km
    default_days: int | None = None
    delivery_weekdays: tuple[int, ...] = (1, 2, 3, 4, 5)
    internal: bool = False
    description: str = ""
    _pairs: dict[tuple[str, str], int] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_pairs", {(o, d): days for o, d, days in self.transit})

    def pair_days(self, origin: str, destination: str) -> int | None:
        """Transit days from the region table alone (wildcards applied)."""
        pairs = self._pairs
        for key in ((origin, destination), (origin, ANY_REGION), (ANY_REGION, destination)):
            days = pairs.get(key)
            if days is not None:
                return days
        return pairs.get((ANY_REGION, ANY_REGION))

    def transit_days(self, origin: str | None, destination: str | None, distance_km: float) -> int | None:
        """Transit days for one parcel; None when this level does not serve it.

        ``origin``/``destination`` are carrier regions (None when unknown) and
        ``distance_km`` is ``inf`` when either end has no coordinates.
        """
        # An unknown end matches wildcard entries only.
        days = self.pair_days(origin or ANY_REGION, destination or ANY_REGION)
        if days is not None:
            return days
        if math.isfinite(distance_km):
            for band in self.distance_bands:
                if distance_km <= band.max_km:
                    return band.days
        return self.default_days


@dataclass(frozen=True, slots=True)
class CarrierTable:
    service_levels: tuple[ServiceLevel, ...]
    regions: tuple[str, ...] = ()  # every declared region, in file order
    postal_regions: tuple[tuple[str, str], ...] = ()  # (postal prefix, region)
    postal_centroids: tuple[tuple[str, float, float], ...] = ()  # (postal prefix, lat, lon)
    transfer_service: str | None = None
    _by_prefix: dict[str, str] = field(init=False, repr=False, compare=False, hash=False)
    _centroids: dict[str, tuple[float, float]] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_prefix", dict(self.postal_regions))
        object.__setattr__(self, "_centroids", {p: (la, lo) for p, la, lo in self.postal_centroids})

    def level(self, name: str) -> ServiceLevel:
        for level in self.service_levels:
            if level.name == name:
                return level
        raise KeyError(name)

    def region_of_postal(self, postal_code: str) -> str | None:
        return longest_prefix(postal_code, self._by_prefix, MAX_POSTAL_PREFIX)

    def centroid_of_postal(self, postal_code: str) -> tuple[float, float] | None:
        return longest_prefix(postal_code, self._centroids, MAX_POSTAL_PREFIX)

    @property
    def customer_levels(self) -> tuple[ServiceLevel, ...]:
        return tuple(level for level in self.service_levels if not level.internal)


# --------------------------------------------------------------------- loading


def load_carriers(path: str | Path) -> CarrierTable:
    """Read a carrier table from a ``.json`` file, or YAML for any other name."""
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    return loads_carriers(text, fmt="json" if p.suffix.lower() == ".json" else "yaml", source=str(p))


def loads_carriers(text: str, *, fmt: str = "yaml", source: str = "carriers") -> CarrierTable:
    """Parse a carrier table from YAML or JSON text."""
    try:
        data = json.loads(text) if fmt == "json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        message = f"{source}: not valid {fmt.upper()}: {exc}"
        raise InvalidArgument(message, (FieldViolation("", message),), reason="INVALID_CARRIERS") from None
    return parse_carriers(data, source=source)


def default_carriers() -> CarrierTable:
    """The sample table shipped for the demo network (``engine/data/carriers.yaml``)."""
    text = resources.files("engine").joinpath("data/carriers.yaml").read_text(encoding="utf-8")
    return loads_carriers(text, source="engine/data/carriers.yaml")


def dump_carriers(table: CarrierTable) -> dict[str, Any]:
    """The document of a table (plain JSON values): ``parse_carriers`` of it gives
    the same table. What the stores persist for a table set over the API, and
    what ``inventory-engine carriers get`` prints."""
    prefixes: dict[str, list[str]] = {region: [] for region in table.regions}
    for prefix, region in table.postal_regions:
        prefixes[region].append(prefix)
    document: dict[str, Any] = {"version": 1, "regions": prefixes}
    if table.postal_centroids:
        document["postal_centroids"] = {p: [lat, lon] for p, lat, lon in table.postal_centroids}
    if table.transfer_service is not None:
        document["transfer_service"] = table.transfer_service
    levels: list[dict[str, Any]] = []
    for level in table.service_levels:
        spec: dict[str, Any] = {"name": level.name, "delivery_days": list(level.delivery_weekdays)}
        if level.transit:
            spec["transit"] = [{"from": o, "to": d, "days": days} for o, d, days in level.transit]
        if level.distance_bands:
            spec["distance_bands"] = [{"max_km": b.max_km, "days": b.days} for b in level.distance_bands]
        if level.default_days is not None:
            spec["default_days"] = level.default_days
        if level.internal:
            spec["internal"] = True
        if level.description:
            spec["description"] = level.description
        levels.append(spec)
    document["service_levels"] = levels
    return document


def parse_carriers(data: Any, *, source: str = "carriers") -> CarrierTable:
    """Check a decoded carrier document and build the table; one error lists every problem."""
    v: list[FieldViolation] = []
    if not isinstance(data, Mapping):
        v.append(FieldViolation("", "the document must be a mapping with a service_levels list"))
        _fail(source, v)
    for key in data:
        if key not in _TOP_KEYS:
            v.append(
                FieldViolation(str(key), f"unknown key (expected one of {', '.join(sorted(_TOP_KEYS))})")
            )
    version = data.get("version", 1)
    if version != 1 or type(version) is not int:
        v.append(FieldViolation("version", f"only version 1 is understood, got {version!r}"))

    regions, postal_regions = _parse_regions(data.get("regions", {}), v)
    centroids = _parse_centroids(data.get("postal_centroids", {}), v)
    levels = _parse_levels(data.get("service_levels"), set(regions), v)

    transfer = data.get("transfer_service")
    if transfer is not None and (not isinstance(transfer, str) or transfer not in {lv.name for lv in levels}):
        v.append(FieldViolation("transfer_service", f"must name one of the service levels, got {transfer!r}"))
    if v:
        _fail(source, v)
    return CarrierTable(
        service_levels=tuple(levels),
        regions=tuple(regions),
        postal_regions=tuple(postal_regions),
        postal_centroids=tuple(centroids),
        transfer_service=transfer,
    )


def _parse_regions(raw: Any, v: list[FieldViolation]) -> tuple[list[str], list[tuple[str, str]]]:
    regions: list[str] = []
    pairs: list[tuple[str, str]] = []
    if not isinstance(raw, Mapping):
        v.append(FieldViolation("regions", "must map region names to lists of postal prefixes"))
        return regions, pairs
    owner: dict[str, str] = {}
    for name, prefixes in raw.items():
        at = f"regions.{name}"
        if not isinstance(name, str) or _REGION.fullmatch(name) is None:
            v.append(FieldViolation(at, "a region name is 1-64 letters, digits, '_', '-' or '.'"))
            continue
        regions.append(name)
        if prefixes is None:
            continue
        if not isinstance(prefixes, list):
            v.append(FieldViolation(at, "must be a list of postal prefixes"))
            continue
        for i, prefix in enumerate(prefixes):
            if not isinstance(prefix, str):
                v.append(
                    FieldViolation(
                        f"{at}[{i}]",
                        f'must be a quoted string, got {prefix!r} (a number loses leading zeros: write "02")',
                    )
                )
                continue
            norm = prefix.replace(" ", "").upper()
            if _PREFIX.fullmatch(norm) is None:
                v.append(FieldViolation(f"{at}[{i}]", f"must be 1-{MAX_POSTAL_PREFIX} letters or digits"))
            elif norm in owner:
                v.append(
                    FieldViolation(f"{at}[{i}]", f"prefix {prefix!r} is already in region {owner[norm]!r}")
                )
            else:
                owner[norm] = name
                pairs.append((norm, name))
    return regions, pairs


def _parse_centroids(raw: Any, v: list[FieldViolation]) -> list[tuple[str, float, float]]:
    out: list[tuple[str, float, float]] = []
    if not isinstance(raw, Mapping):
        v.append(FieldViolation("postal_centroids", "must map postal prefixes to [latitude, longitude]"))
        return out
    for prefix, point in raw.items():
        at = f"postal_centroids.{prefix}"
        norm = prefix.replace(" ", "").upper() if isinstance(prefix, str) else ""
        if _PREFIX.fullmatch(norm) is None:
            v.append(
                FieldViolation(at, f"key must be a quoted postal prefix of 1-{MAX_POSTAL_PREFIX} characters")
            )
            continue
        if (
            not isinstance(point, list)
            or len(point) != 2
            or not all(_is_number(x) for x in point)
            or not -90.0 <= point[0] <= 90.0
            or not -180.0 <= point[1] <= 180.0
        ):
            v.append(FieldViolation(at, "must be [latitude -90..90, longitude -180..180]"))
            continue
        out.append((norm, float(point[0]), float(point[1])))
    return out


def _parse_levels(raw: Any, regions: set[str], v: list[FieldViolation]) -> list[ServiceLevel]:
    levels: list[ServiceLevel] = []
    if not isinstance(raw, list) or not raw:
        v.append(FieldViolation("service_levels", "at least one service level is required"))
        return levels
    names: set[str] = set()
    for i, spec in enumerate(raw):
        at = f"service_levels[{i}]"
        if not isinstance(spec, Mapping):
            v.append(FieldViolation(at, "must be a mapping with a name"))
            continue
        for key in spec:
            if key not in _LEVEL_KEYS:
                v.append(FieldViolation(f"{at}.{key}", "unknown key"))
        name = spec.get("name")
        if not isinstance(name, str) or _NAME.fullmatch(name) is None:
            v.append(FieldViolation(f"{at}.name", "1-32 lowercase letters, digits, '_' or '-'"))
            name = None
        elif name in names:
            v.append(FieldViolation(f"{at}.name", f"service level {name!r} is defined twice"))
        else:
            names.add(name)

        weekdays = _parse_weekdays(
            spec.get("delivery_days", ["Mon", "Tue", "Wed", "Thu", "Fri"]), f"{at}.delivery_days", v
        )
        transit = _parse_transit(spec.get("transit", []), f"{at}.transit", regions, v)
        bands = _parse_bands(spec.get("distance_bands", []), f"{at}.distance_bands", v)
        default = spec.get("default_days")
        if default is not None and not _is_days(default):
            v.append(FieldViolation(f"{at}.default_days", f"must be an integer 0..{MAX_TRANSIT_DAYS}"))
            default = None
        if not transit and not bands and spec.get("default_days") is None:
            v.append(FieldViolation(at, "give transit pairs, distance_bands or default_days"))
        internal = spec.get("internal", False)
        if not isinstance(internal, bool):
            v.append(FieldViolation(f"{at}.internal", "must be true or false"))
            internal = False
        description = spec.get("description", "")
        if not isinstance(description, str):
            v.append(FieldViolation(f"{at}.description", "must be a string"))
            description = ""
        if name is not None:
            levels.append(
                ServiceLevel(
                    name=name,
                    transit=tuple(transit),
                    distance_bands=tuple(bands),
                    default_days=default,
                    delivery_weekdays=weekdays,
                    internal=internal,
                    description=description,
                )
            )
    return levels


def _parse_weekdays(raw: Any, at: str, v: list[FieldViolation]) -> tuple[int, ...]:
    if not isinstance(raw, list) or not raw:
        v.append(FieldViolation(at, "must be a non-empty list of weekdays (Mon..Sun or 1..7)"))
        return (1, 2, 3, 4, 5)
    out: list[int] = []
    for i, day in enumerate(raw):
        number = _WEEKDAYS.get(day[:3].lower()) if isinstance(day, str) else day
        if type(number) is not int or not 1 <= number <= 7:
            v.append(FieldViolation(f"{at}[{i}]", f"must be a weekday Mon..Sun or 1..7, got {day!r}"))
        elif number in out:
            v.append(FieldViolation(f"{at}[{i}]", f"repeats {day!r}"))
        else:
            out.append(number)
    return tuple(sorted(out)) or (1, 2, 3, 4, 5)


def _parse_transit(
    raw: Any, at: str, regions: set[str], v: list[FieldViolation]
) -> list[tuple[str, str, int]]:
    out: list[tuple[str, str, int]] = []
    if not isinstance(raw, list):
        v.append(FieldViolation(at, "must be a list of {from, to, days}"))
        return out
    seen: dict[tuple[str, str], int] = {}
    for i, entry in enumerate(raw):
        here = f"{at}[{i}]"
        if not isinstance(entry, Mapping) or set(entry) != {"from", "to", "days"}:
            v.append(FieldViolation(here, "must be {from: REGION, to: REGION, days: N}"))
            continue
        ok = True
        for end in ("from", "to"):
            region = entry[end]
            if region != ANY_REGION and region not in regions:
                v.append(
                    FieldViolation(f"{here}.{end}", f"unknown region {region!r}: declare it under regions")
                )
                ok = False
        if not _is_days(entry["days"]):
            v.append(FieldViolation(f"{here}.days", f"must be an integer 0..{MAX_TRANSIT_DAYS}"))
            ok = False
        if not ok:
            continue
        key = (entry["from"], entry["to"])
        if key in seen:
            v.append(FieldViolation(here, f"repeats {at}[{seen[key]}] ({key[0]} -> {key[1]})"))
            continue
        seen[key] = i
        out.append((key[0], key[1], entry["days"]))
    return out


def _parse_bands(raw: Any, at: str, v: list[FieldViolation]) -> list[DistanceBand]:
    out: list[DistanceBand] = []
    if not isinstance(raw, list):
        v.append(FieldViolation(at, "must be a list of {max_km, days}"))
        return out
    for i, entry in enumerate(raw):
        here = f"{at}[{i}]"
        if not isinstance(entry, Mapping) or set(entry) != {"max_km", "days"}:
            v.append(FieldViolation(here, "must be {max_km: KM, days: N}"))
            continue
        max_km = entry["max_km"]
        if not _is_number(max_km) or not 0 < max_km < math.inf:
            v.append(FieldViolation(f"{here}.max_km", "must be a positive number of kilometres"))
            continue
        if not _is_days(entry["days"]):
            v.append(FieldViolation(f"{here}.days", f"must be an integer 0..{MAX_TRANSIT_DAYS}"))
            continue
        if out and max_km <= out[-1].max_km:
            v.append(FieldViolation(f"{here}.max_km", "bands must be in increasing max_km order"))
            continue
        out.append(DistanceBand(float(max_km), entry["days"]))
    return out


def _is_number(x: Any) -> bool:
    return type(x) in (int, float) and math.isfinite(x)


def _is_days(x: Any) -> bool:
    return type(x) is int and 0 <= x <= MAX_TRANSIT_DAYS


def _fail(source: str, violations: list[FieldViolation]) -> NoReturn:
    first = violations[0]
    more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
    where = f"{first.field} " if first.field else ""
    raise InvalidArgument(
        f"{source}: {where}{first.description}{more}", tuple(violations), reason="INVALID_CARRIERS"
    )
