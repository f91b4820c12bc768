"""Render the templates in config/ to the paths they mirror.

``config/etc/postfix/main.cf.j2`` becomes ``/etc/postfix/main.cf``; files
without the ``.j2`` suffix are copied as they are. Undefined variables are
errors (StrictUndefined), so a typo in a template stops the start.

At start-up the files are written below ``paths.RENDERED`` (on /run), and the
image has a symbolic link at each mirrored path (``/etc/postfix/main.cf`` ->
``/run/chatmail/config/etc/postfix/main.cf``, made by :func:`link_all` when the
image is built), so the root filesystem can stay read-only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jinja2

from relay import paths


def environment(templates: Path = paths.CONFIG_TEMPLATES) -> jinja2.Environment:
    """The jinja2 environment for the templates below ``templates``: StrictUndefined (a missing
    variable raises jinja2.UndefinedError), no autoescaping, trailing newline kept, block tags
    trimmed.
    """
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def template_names(templates: Path = paths.CONFIG_TEMPLATES) -> list[str]:
    """Every file below ``templates`` as a path relative to it (e.g. ``"etc/postfix/main.cf.j2"``),
    sorted.
    """
    return sorted(
        str(p.relative_to(templates)) for p in templates.rglob("*") if p.is_file())


def render_one(name: str, context: dict[str, Any], root: Path = Path("/"),
               templates: Path = paths.CONFIG_TEMPLATES,
               env: jinja2.Environment | None = None) -> Path:
    """Render (or copy) one template, e.g. ``etc/opendkim.conf.j2``, below ``root``;
    the file written (mode 0644, replaced atomically)."""
    if name.endswith(".j2"):
        text = (env or environment(templates)).get_template(name).render(**context)
        target = root / name[:-3]
    else:
        text = (templates / name).read_text()
        target = root / name
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)
    return target


def render_all(context: dict[str, Any], root: Path = Path("/"),
               templates: Path = paths.CONFIG_TEMPLATES, only: str = "") -> list[Path]:
    """Write every template below ``templates`` whose name starts with ``only`` (all by
    default; ``var/www/`` for the web pages alone) to the path it mirrors under ``root``
    (``.j2`` files rendered with ``context``, others copied), each atomically with mode
    0644; returns the paths written. Raises jinja2.UndefinedError for a variable
    ``context`` lacks.
    """
    env = environment(templates)
    return [render_one(name, context, root, templates, env)
            for name in template_names(templates) if name.startswith(only)]


def link_all(rendered: Path = paths.RENDERED, root: Path = Path("/"),
             templates: Path = paths.CONFIG_TEMPLATES) -> list[Path]:
    """Point every path a template mirrors at its rendered file (run at image build)."""
    linked = []
    for name in template_names(templates):
        target = name[:-3] if name.endswith(".j2") else name
        link = root / target
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(rendered / target)
        linked.append(link)
    return linked


if __name__ == "__main__":
    import sys
    if sys.argv[1:] != ["--link"]:
        sys.exit("usage: python3 -m relay.boot.render --link")
    for link in link_all():
        print(f"{link} -> {os.readlink(link)}")
