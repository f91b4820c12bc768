"""``python3 -m relay.settings --markdown | --write-docs REPO_ROOT``."""

import sys

from relay.settings.docs import markdown_table, write_docs

if sys.argv[1:] == ["--markdown"]:
    sys.stdout.write(markdown_table())
elif sys.argv[1:2] == ["--write-docs"] and len(sys.argv) == 3:
    write_docs(sys.argv[2])
else:
    sys.exit("usage: python3 -m relay.settings --markdown | --write-docs REPO_ROOT")
