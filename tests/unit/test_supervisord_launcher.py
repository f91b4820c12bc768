"""relay.boot.supervisord's stand-in for pkg_resources resolves specs as supervisor expects."""

import os.path

import pytest

from relay.boot import supervisord


def test_parse_and_resolve_the_form_supervisor_uses():
    """supervisor's Options.import_spec: EntryPoint.parse("x=" + spec).resolve()."""
    assert supervisord.EntryPoint.parse("x=os.path:join").resolve() is os.path.join
    assert supervisord.EntryPoint.parse("x = os.path:basename").resolve() is os.path.basename


@pytest.mark.parametrize("text", ["os.path:join", "x=", "x=  "])
def test_parse_refuses_what_is_no_entry_point(text):
    with pytest.raises(ValueError):
        supervisord.EntryPoint.parse(text)


def test_resolve_names_what_is_missing():
    with pytest.raises(AttributeError):
        supervisord.EntryPoint.parse("x=os.path:no_such_function").resolve()
    with pytest.raises(ImportError):
        supervisord.EntryPoint.parse("x=no_such_module_here:thing").resolve()


def test_stand_in_is_a_module_with_entry_point():
    module = supervisord.stand_in()
    assert module.__name__ == "pkg_resources"
    assert module.EntryPoint is supervisord.EntryPoint
