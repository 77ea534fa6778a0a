"""Typed stub of the Cython sourcing loop; mirrors engine.core.sourcing.PureSourcer."""

from collections.abc import Collection, Sequence

from engine.core.network import Network, ResolvedDestination
from engine.core.sourcing import LinePlan, PlanLine

__all__ = ["FastSourcer"]

class FastSourcer:
    implementation: str

    def __init__(self, network: Network) -> None: ...
    def plan(
        self,
        now: float,
        service: int,
        destination: ResolvedDestination,
        eligible: Sequence[str],
        lines: Sequence[PlanLine],
        allow_split: bool,
        capabilities: int,
        full: Collection[str] = (),
    ) -> list[LinePlan | None]: ...
