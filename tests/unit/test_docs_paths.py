"""The developer docs name only what exists: every repository path in README.md and
relay/ARCHITECTURE.md, every file ARCHITECTURE.md names, and every dotted ``relay.x.y`` name
in either (a module, or an attribute of one)."""

import importlib
import re

from relaytest import ROOT

DOCS = [ROOT / "README.md", ROOT / "relay" / "ARCHITECTURE.md"]
GENERATED = {"bench/results.json"}  # written by make bench
REPO_PATH = re.compile(r"(?<![\w/.])((?:relay|config|image|tests|bench|examples)/[\w./-]*[\w/])")
FILE_NAME = re.compile(r"`(?:[\w-]+/)?(\w+\.(?:py|sh|patch))`")
DOTTED = re.compile(r"(?<![\w/.])(relay(?:\.[A-Za-z_]\w*)+)")


def mentioned(pattern, text):
    return sorted(set(pattern.findall(text)))


def test_every_repository_path_in_the_docs_exists():
    paths = [(doc.name, p) for doc in DOCS for p in mentioned(REPO_PATH, doc.read_text())]
    assert len(paths) > 30
    assert [(doc, p) for doc, p in paths if p not in GENERATED and not (ROOT / p).exists()] == []


def test_every_file_architecture_md_names_exists():
    names = mentioned(FILE_NAME, (ROOT / "relay" / "ARCHITECTURE.md").read_text())
    assert len(names) > 30
    existing = {p.name for top in ("relay", "image", "tests") for p in (ROOT / top).rglob("*")}
    existing.add("entrypoint.py")
    assert [n for n in names if n not in existing] == []


def resolves(dotted: str) -> bool:
    """True when ``dotted`` is a module, or a module followed by attribute names."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_every_dotted_relay_name_in_the_docs_resolves():
    names = {n for doc in DOCS for n in mentioned(DOTTED, doc.read_text())}
    assert "relay.filter.guard.STRICT" in names
    assert sorted(n for n in names if not resolves(n)) == []
