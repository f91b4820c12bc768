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


HOST_HEADER = """\
# GENERATED from compose.yaml by `make docs`: edit compose.yaml, not this file.
# The same relay with host networking instead of published ports, so that it sees
# every client's own address (IPv4 and IPv6): per-address limits then count each
# client on its own (README: Real client addresses). Use it instead of compose.yaml:
#   docker compose -f compose.host.yaml up -d      (docker-compose 1.29: docker-compose -f ...)
# The host's ports 25, 80, 443, 465, 587 and 993 (for calls also 3478 and
# TURN_RELAY_PORTS) must be free; PUBLISH_ON has no effect. Same service, same volume:
# switching between the two files keeps all data.
"""
HOST_NETWORK = """\
    # The host's network stack: no port publishing, no NAT, no userland proxy in
    # between, so every connection arrives with the client's own address.
    network_mode: host
"""


def compose_host(compose: str) -> str:
    """compose.host.yaml from compose.yaml's text: its ``ports:`` block replaced by
    ``network_mode: host`` (Compose refuses the two together), its header by ours."""
    body = compose[compose.index("services:"):]
    head, _, rest = body.partition("    ports:\n")
    _, _, tail = rest.partition("    volumes:\n")
    tail = tail.replace("no host namespaces.", "no host namespace but the network.")
    return HOST_HEADER + head + HOST_NETWORK + "    volumes:\n" + tail


def write_docs(root: str) -> None:
    """Regenerate the README table, compose.yaml's environment block and compose.host.yaml."""
    base = pathlib.Path(root)
    readme = base / "README.md"
    readme.write_text(_replace_between(readme.read_text(), "<!-- settings-table:start -->\n",
                                       "<!-- settings-table:end -->", markdown_table()))
    compose = base / "compose.yaml"
    compose.write_text(_replace_between(compose.read_text(), "    environment:\n",
                                        "    ports:", compose_environment()))
    (base / "compose.host.yaml").write_text(compose_host(compose.read_text()))
