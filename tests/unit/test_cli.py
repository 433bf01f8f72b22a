import pytest

from ngxws.__main__ import UsageError, parse_args


def test_bundled_and_glued_flags():
    o = parse_args(["-tq", "-cfoo.conf", "-p", "/x/", "-g", "daemon off;"])
    assert o.test and o.quiet and o.conf_file == "foo.conf" and o.prefix == "/x/"
    assert o.directives == "daemon off;"


def test_signal_names():
    assert parse_args(["-s", "reload"]).signal == "reload"
    with pytest.raises(UsageError, match='invalid option: "-s restart"'):
        parse_args(["-s", "restart"])


def test_missing_value():
    with pytest.raises(UsageError, match='option "-c" requires file name'):
        parse_args(["-c"])
