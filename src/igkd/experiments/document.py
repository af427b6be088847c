"""A report as a list of blocks (headings, paragraphs, tables, images), rendered to Markdown and to HTML, and the
number formatting every report shares."""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field

_INLINE = [(re.compile(r"\*\*(.+?)\*\*"), r"<b>\1</b>"), (re.compile(r"`(.+?)`"), r"<code>\1</code>")]
_STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
    "td:first-child,th:first-child{text-align:left}img{max-width:100%}code{background:#f4f4f4}"
)


def percent(fraction: float | None) -> str:
    """A fraction as a percentage with two decimals (``0.9118`` -> ``91.18``); ``n/a`` when missing or not finite."""
    return "n/a" if fraction is None or not math.isfinite(fraction) else f"{100 * fraction:.2f}"


def plural(count: int, word: str) -> str:
    """``word`` for one, ``word + 's'`` for any other count (``plural(2, "run")`` -> ``runs``)."""
    return word if count == 1 else f"{word}s"


def _inline_html(text: str) -> str:
    out = html.escape(text, quote=False)
    for pattern, replacement in _INLINE:
        out = pattern.sub(replacement, out)
    return out


@dataclass
class Document:
    """Blocks in order; ``markdown()`` and ``html()`` render the same content."""

    title: str
    blocks: list[tuple[str, tuple]] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("heading", (level, text)))

    def paragraph(self, text: str) -> None:
        self.blocks.append(("paragraph", (text,)))

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.blocks.append(("table", (header, rows)))

    def image(self, path: str, alt: str) -> None:
        self.blocks.append(("image", (path, alt)))

    def markdown(self) -> str:
        """GitHub-flavoured Markdown."""
        lines = [f"# {self.title}", ""]
        for kind, args in self.blocks:
            if kind == "heading":
                lines += ["#" * args[0] + " " + args[1], ""]
            elif kind == "paragraph":
                lines += [args[0], ""]
            elif kind == "table":
                header, rows = args
                lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                lines += ["| " + " | ".join(row) + " |" for row in rows] + [""]
            else:
                lines += [f"![{args[1]}]({args[0]})", ""]
        return "\n".join(lines)

    def html(self) -> str:
        """A standalone HTML page (images referenced by relative path)."""
        parts = [
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{html.escape(self.title)}</h1>"
        ]
        for kind, args in self.blocks:
            if kind == "heading":
                parts.append(f"<h{args[0]}>{_inline_html(args[1])}</h{args[0]}>")
            elif kind == "paragraph":
                parts.append(f"<p>{_inline_html(args[0])}</p>")
            elif kind == "table":
                header, rows = args
                head = "".join(f"<th>{_inline_html(h)}</th>" for h in header)
                body = "".join("<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in row) + "</tr>" for row in rows)
                parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            else:
                parts.append(f"<p><img src='{html.escape(args[0])}' alt='{html.escape(args[1])}'></p>")
        return "\n".join(parts) + "</body></html>\n"
