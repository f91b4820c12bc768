"""The README table and compose.yaml are kept in step with relay/settings.py."""

import re

from relay import settings
from relay.settings import docs
from relaytest import ROOT


def test_readme_table_is_generated_from_settings():
    readme = (ROOT / "README.md").read_text()
    start = readme.index("<!-- settings-table:start -->") + len("<!-- settings-table:start -->\n")
    end = readme.index("<!-- settings-table:end -->")
    assert readme[start:end] == docs.markdown_table(), (
        "README.md's settings table is stale: regenerate it with "
        "`make docs`")


def test_compose_passes_every_setting_through():
    compose = (ROOT / "compose.yaml").read_text()
    passed = set(re.findall(r"^\s+([A-Z_]+): \$\{\1:-\}$", compose, re.M))
    assert passed == {s.name for s in settings.SETTINGS}


def test_compose_has_no_top_level_name_and_a_fixed_volume_name():
    compose = (ROOT / "compose.yaml").read_text()
    assert not re.search(r"^name:", compose, re.M), "docker-compose 1.29 refuses a top-level name"
    assert re.search(r"^volumes:\n  relay-data:\n(    #.*\n)*    name: ", compose, re.M)


def test_compose_bounds_the_log_docker_keeps():
    """The daemons' log lines name connecting addresses: Docker keeps a bounded amount
    (the privacy page promises it)."""
    compose = (ROOT / "compose.yaml").read_text()
    assert re.search(r"^    logging:\n      driver: json-file\n      options:\n"
                     r"        max-size: 10m\n        max-file: \"3\"$", compose, re.M)
    page = (ROOT / "config/var/www/chatmail/privacy.html.j2").read_text()
    assert "newest 30 MB" in page
