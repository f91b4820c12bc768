"""The README's settings table and compose.yaml's environment block, generated from
:data:`relay.settings.SETTINGS` (``make docs``; a unit test keeps both in step)."""

from __future__ import annotations

import pathlib

from relay.settings import SETTINGS


def markdown_table() -> str:
    """The README's settings table (Markdown): one row per setting with its name, default
    (*(required)* when none), accepted values and meaning; ends with a newline.
    """
    rows = ["| Variable | Default | Accepted values | Meaning |", "|---|---|---|---|"]
    for s in SETTINGS:
        default = "*(required)*" if s.default is None else f"`{s.default}`"
        rows.append(f"| `{s.name}` | {default} | {s.accepted} | {s.doc} |")
    return "\n".join(rows) + "\n"


def compose_environment() -> str:
    """The environment block of compose.yaml: every setting passed through."""
    return "".join(f"      {s.name}: ${{{s.name}:-}}\n" for s in SETTINGS)


def _replace_between(text: str, start: str, end: str, new: str) -> str:
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    return head + start + new + end + tail


def write_docs(root: str) -> None:
    """Regenerate the README table and compose.yaml's environment block."""
    base = pathlib.Path(root)
    readme = base / "README.md"
    readme.write_text(_replace_between(readme.read_text(), "<!-- settings-table:start -->\n",
                                       "<!-- settings-table:end -->", markdown_table()))
    compose = base / "compose.yaml"
    compose.write_text(_replace_between(compose.read_text(), "    environment:\n",
                                        "    ports:", compose_environment()))
