"""Span data as text: every value from a span, a queue or a message body is untrusted, and must reach the page
as the characters it holds, never as Markdown, HTML, LaTeX or a link.

Streamlit renders Markdown (GitHub's, plus LaTeX between ``$``, ``:red[...]`` directives, ``:material/...:``
icons and ``:emoji:`` shortcodes) in titles, captions, alerts, metric labels and values, tabs, radio and
button labels and ``help`` tooltips; Plotly renders a subset of HTML (``<a href>``, ``<b>``, ``<br>``) and
entities in titles, legends, tick labels and hover text. ``markdown_text`` and ``plotly_text`` turn any
string into one that those renderers show literally; ``shorten`` keeps a long name from taking the space of
the chart it labels (the page shows the whole name on hover). Text-only elements (``st.text``, dataframe
cells, select options) need none of this.
"""

from __future__ import annotations

import html
import re
import textwrap

# How many characters of a name a chart label, a heading or an option shows before the middle is elided.
LABEL_CHARS = 60
# Hover text wraps at this width and stops after this many characters: a tooltip, not a document.
HOVER_WIDTH = 80
HOVER_CHARS = 2000
ELLIPSIS = "…"

# Characters with a meaning anywhere in a line: escapes, code, emphasis, strikethrough, links and images,
# HTML and entities, LaTeX, tables, ATX heading marks. CommonMark lets any ASCII punctuation be
# backslash-escaped, so these are; the rest (``-``, ``.``, ``/``, ``(``, ...) stays as it is, so that names
# like ``shipping-dlq`` or ``POST /orders`` read the same in the source.
_INLINE = re.compile(r"([\\`*_~\[\]<&$|#])")
# A colon starts a directive (``:red[...]``) or a Material icon (``:material/x:``) when a name follows it.
_DIRECTIVE = re.compile(r":(?=[\w+-])")
# What starts a block at the start of a line: a list, quote or setext mark, or an ordered list's "1." / "1)".
_LINE_START = re.compile(r"^([ \t]*)(?:([-+=>])|(\d+)([.)]))")
# Two plugins rework text nodes after the escapes are resolved: remark-emoji turns ":name:" into an emoji, and
# GFM's autolink literals turn "http://...", "www...." and "name@host" into links. A word joiner (U+2060,
# invisible) at each of these spots keeps them from matching.
_TEXT_NODE_PATTERN = re.compile(
    r"(?<=:)(?=[\w+-]+:)|(?<=https)(?=://)|(?<=http)(?=://)|(?<=www)(?=\.)|(?=@)", re.IGNORECASE
)
_WORD_JOINER = "\u2060"
# C0 and C1 controls (but newline) and DEL would be invisible or break layouts.
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")
_WHITESPACE_RUN = re.compile(r"\s+")


def one_line(text: str) -> str:
    """Line breaks, tabs and control characters as single spaces: for labels, which have one line."""
    return _WHITESPACE_RUN.sub(" ", _CONTROL.sub(" ", text)).strip()


def shorten(text: str, limit: int = LABEL_CHARS) -> str:
    """``text`` on one line, at most ``limit`` characters: the middle gives way to an ellipsis, so that both
    the start (the service) and the end (what differs between siblings) stay readable."""
    text = one_line(text)
    if len(text) <= limit:
        return text
    head = (limit - 1) // 2 + (limit - 1) % 2
    tail = limit - 1 - head
    return text[:head] + ELLIPSIS + (text[-tail:] if tail else "")


def markdown_text(text: str) -> str:
    """``text`` escaped for Streamlit's Markdown, so that it shows exactly these characters.

    Each character with a Markdown meaning is backslash-escaped (CommonMark allows it for any ASCII
    punctuation), an invisible word joiner breaks each emoji shortcode and bare URL or e-mail address (which
    Streamlit's plugins would find in the text once escapes are resolved), control characters become
    U+FFFD, and each line break becomes a hard break (a backslash at the end of the line), so that a line
    can never start a block.
    """
    text = _CONTROL.sub("\ufffd", text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " "))
    # A hard break cannot end a paragraph (its backslash would show): blank space at either end is dropped.
    return "\\\n".join(_markdown_line(line) for line in text.strip().split("\n"))


def _markdown_line(line: str) -> str:
    line = _TEXT_NODE_PATTERN.sub(_WORD_JOINER, line)
    line = _DIRECTIVE.sub(r"\\:", _INLINE.sub(r"\\\1", line))
    # Streamlit rewrites ":material/" before parsing, escaped or not.
    line = line.replace("\\:material/", "\\:material\\/")
    line = _LINE_START.sub(_escape_line_start, line, count=1)
    # Leading spaces would be trimmed or read as indentation: no-break spaces keep them as text.
    indent = len(line) - len(line.lstrip(" "))
    return "\u00a0" * indent + line[indent:]


def _escape_line_start(match: re.Match[str]) -> str:
    indent, mark, digits, delimiter = match.groups()
    return f"{indent}\\{mark}" if mark else f"{indent}{digits}\\{delimiter}"


def markdown_label(text: str, limit: int = LABEL_CHARS) -> str:
    """A name for a heading, a caption or a label: on one line, shortened, escaped."""
    return markdown_text(shorten(text, limit))


def markdown_names(names: list[str]) -> str:
    """Names in a caption, comma-separated: each shortened and escaped."""
    return ", ".join(markdown_label(name) for name in names)


def whole_text(text: str, limit: int = LABEL_CHARS) -> str | None:
    """The whole of ``text``, escaped, for the ``help`` tooltip of a label that ``markdown_label`` shortens;
    None when the label shows it whole."""
    return markdown_text(text) if shorten(text, limit) != text else None


def plotly_text(text: str) -> str:
    """``text`` on one line for a Plotly label (title, legend, tick, bar text): ``&``, ``<`` and ``>`` as
    entities (so no tag is read; Plotly knows only a few named entities, and no ``&quot;``), and ``$`` as
    ``&#36;`` so that a MathJax on the page could never read LaTeX in it."""
    return html.escape(one_line(text), quote=False).replace("$", "&#36;")


def plotly_hover(text: str) -> str:
    """The whole of ``text`` for a Plotly hover box: wrapped into lines, escaped, joined with ``<br>``."""
    flat = one_line(text)
    if len(flat) > HOVER_CHARS:
        flat = flat[: HOVER_CHARS - 1] + ELLIPSIS
    lines = textwrap.wrap(flat, HOVER_WIDTH, break_long_words=True, break_on_hyphens=False) or [""]
    return "<br>".join(plotly_text(line) for line in lines)
