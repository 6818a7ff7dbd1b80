"""Result tables and their Markdown / reStructuredText rendering."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Table", "fmt_bytes", "fmt_ratio", "fmt_us", "render"]


@dataclass
class Table:
    """A titled table of strings, with notes printed under it."""

    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        """Append a row; cells are converted with ``str``."""
        if len(cells) != len(self.headers):
            raise ValueError(f"{self.title}: row has {len(cells)} cells, expected {len(self.headers)}")
        self.rows.append([str(c) for c in cells])


def fmt_us(value: float | None) -> str:
    """Microseconds with about three significant digits."""
    if value is None:
        return "-"
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def fmt_ratio(numerator: float | None, denominator: float | None) -> str:
    """``numerator / denominator`` as "12.3x", or "-" when either is missing."""
    if numerator is None or denominator is None or denominator <= 0:
        return "-"
    ratio = numerator / denominator
    return f"{ratio:,.0f}x" if ratio >= 100 else f"{ratio:.1f}x"


def fmt_bytes(value: float | None) -> str:
    """A byte count in B / KiB / MiB."""
    if value is None:
        return "-"
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(value) >= size:
            return f"{value / size:,.1f} {unit}"
    return f"{value:,.0f} B"


def _markdown(table: Table) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in table.rows)) if table.rows else len(h) for i, h in enumerate(table.headers)
    ]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    out = [f"### {table.title}", "", line(table.headers)]
    out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    out.extend(line(r) for r in table.rows)
    if table.notes:
        out.append("")
        out.extend(f"- {note}" for note in table.notes)
    return "\n".join(out)


def _rst(table: Table) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in table.rows)) if table.rows else len(h) for i, h in enumerate(table.headers)
    ]
    border = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    header_border = border.replace("-", "=")

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    out = [table.title, "~" * len(table.title), "", border, line(table.headers), header_border]
    for row in table.rows:
        out.extend([line(row), border])
    if not table.rows:
        out.append(border)
    if table.notes:
        out.append("")
        out.extend(f"* {note}" for note in table.notes)
    return "\n".join(out)


def render(tables: list[Table], *, fmt: str = "markdown", preamble: list[str] | None = None) -> str:
    """Render ``tables`` (after optional preamble lines) as Markdown or RST."""
    renderer = _rst if fmt == "rst" else _markdown
    parts = ["\n".join(preamble)] if preamble else []
    parts.extend(renderer(t) for t in tables)
    return "\n\n".join(parts) + "\n"
