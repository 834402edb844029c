"""One row per figure of merit, as the combined report (``python -m benchmarks``) prints them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    """A measured figure beside its peer and the target it is held to (``met`` None: no target)."""

    benchmark: str
    case: str
    result: str
    compared_with: str
    target: str
    met: bool | None

    def row(self) -> str:
        verdict = {True: "met", False: "**missed**", None: "—"}[self.met]
        cells = (self.benchmark, self.case, self.result, self.compared_with, self.target, verdict)
        return "| " + " | ".join(cells) + " |"


HEADER = (
    "| benchmark | case | result | compared with (same run) | target | verdict |\n|---|---|---|---|---|---|"
)


def table(figures: list[Figure]) -> str:
    """The markdown table of ``figures``."""
    return "\n".join([HEADER, *(figure.row() for figure in figures)])


def rate(value: float) -> str:
    return f"{value:,.0f} tasks/s"
