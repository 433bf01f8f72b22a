"""core/conf.py: tokenizer and block parser. Expected messages were taken from nginx 1.22 `nginx -t`."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ngxws.core.conf import BUFFER, COMMAND_LINE, ConfigError, Node, decode, parse, read

F = "/etc/ngxws/nginx.conf"


def words(text):
    """[(name, args), ...] of the top level."""
    return [(n.name, n.args) for n in parse(text, F)]


def error(text, file=F):
    with pytest.raises(ConfigError) as info:
        parse(text, file)
    return str(info.value)


def shape(nodes):
    """A tree without locations, to compare trees read from different texts."""
    return [(n.name, n.args, None if n.children is None else shape(n.children)) for n in nodes]


# -- tokens ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a;", [("a", [])]),
        ("a b  c\t d;", [("a", ["b", "c", "d"])]),
        ("a\r\nb\r\n;", [("a", ["b"])]),
        ("a;b;", [("a", []), ("b", [])]),
        # quotes and escapes; other backslash pairs are kept (regexes need them)
        (r'"a\tb\"c\\d\qe\$f${g}" x;', [('a\tb"c\\d\\qe\\$f${g}', ["x"])]),
        (r"""'a\'b\"' x;""", [("a'b\"", ["x"])]),
        (r"a\nb\r\t;", [("a\nb\r\t", [])]),
        (r"a\ b x;", [("a\\ b", ["x"])]),
        (r"a\;b;", [("a\\;b", [])]),
        ('x "" \'\';', [("x", ["", ""])]),
        ('x "a b;{}#";', [("x", ["a b;{}#"])]),
        ("x 'multi\nline';", [("x", ["multi\nline"])]),
        ('a"b c"d;', [('a"b', ['c"d'])]),
        # ${var} keeps its braces; a lone { ends the word
        ("set $a ${b}x;", [("set", ["$a", "${b}x"])]),
        ("a${b c;", [("a${b", ["c"])]),
        ("x ${{{;", [("x", ["${{{"])]),
        ("x a}b;", [("x", ["a}b"])]),
        # comments run to the end of the line, but only where a word could start
        ("# c\nfoo # trailing\n bar;", [("foo", ["bar"])]),
        ("x#y c;", [("x#y", ["c"])]),
        ("a; # last line without newline", [("a", [])]),
        # a ")" may follow a quoted word: `if ($a = "b")`
        ('if ($a = "b") x;', [("if", ["($a", "=", "b", ")", "x"])]),
        ('"x") c;', [("x", [")", "c"])]),
        ("", []),
        ("\n \t\r\n", []),
        ("\x00 \u00e9\u2028;", [("\x00", ["\u00e9\u2028"])]),
    ],
)
def test_tokens(text, expected):
    assert words(text) == expected


def test_blocks_nest_and_lines_are_where_nginx_reports_them():
    text = "events {\n  worker_connections 10;\n}\nhttp {\n server { listen\n 80\n ; }\n}\n"
    nodes = parse(text, F)
    assert shape(nodes) == [
        ("events", [], [("worker_connections", ["10"], None)]),
        ("http", [], [("server", [], [("listen", ["80"], None)])]),
    ]
    assert [n.line for n in nodes] == [1, 4]
    assert nodes[0].children[0].line == 2
    assert nodes[1].children[0].children[0].line == 7  # the ";" line, as nginx reports it
    assert {n.file for n in nodes} == {F}


def test_empty_block_and_block_with_args():
    assert shape(parse("location = /x { } a {}", F)) == [("location", ["=", "/x"], []), ("a", [], [])]


# -- syntax errors, in nginx's words ---------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("events {}\n}\n", 'unexpected "}" in F:2'),
        ("a b }", 'unexpected "}" in F:1'),
        ("events {\n", 'unexpected end of file, expecting "}" in F:2'),
        ("a {\n b {\n c;\n}", 'unexpected end of file, expecting "}" in F:4'),
        ("events {}\nfoo", 'unexpected end of file, expecting ";" or "}" in F:2'),
        ("a 1}\n", 'unexpected end of file, expecting ";" or "}" in F:2'),
        ('a "1\n', 'unexpected end of file, expecting ";" or "}" in F:2'),
        ('a "x"', 'unexpected end of file, expecting ";" or "}" in F:1'),
        ('a "x" ', 'unexpected end of file, expecting ";" or "}" in F:1'),
        ("a \\", 'unexpected end of file, expecting ";" or "}" in F:1'),
        ("events {}\n;\n", 'unexpected ";" in F:2'),
        ("events {}\n{\n", 'unexpected "{" in F:2'),
        ('a "1"x;', 'unexpected "x" in F:1'),
        ('"x"#y c;', 'unexpected "#" in F:1'),
        ('"x" "y""z";', 'unexpected """ in F:1'),
        ('"x"\\ y;', 'unexpected "\\" in F:1'),
        ('"x"\u00e9;', 'unexpected "\u00e9" in F:1'),
    ],
)
def test_syntax_errors(text, expected):
    assert error(text) == expected.replace("F:", F + ":")


def test_error_carries_file_and_line():
    with pytest.raises(ConfigError) as info:
        parse("a;\n\n}", F)
    assert (info.value.msg, info.value.file, info.value.line) == ('unexpected "}"', F, 3)


# nginx reads through a 4096-byte buffer that starts where the current word (or the space before
# it) started; these lengths are the edges measured with nginx 1.22.
@pytest.mark.parametrize(
    "text, expected",
    [
        ("x " + "a" * 4094 + " y;", None),
        ("x " + "a" * 4095 + " y;", 'too long parameter "aaaaaaaaaa..." started in F:1'),
        ("x " + "a" * 4095 + ";y;", None),  # a ";" returns, and nginx starts afresh
        ('x "' + "a" * 4093 + '" y;', None),
        ('x "' + "a" * 4094 + '" y;', 'too long parameter "aaaaaaaaaa..." started in F:1'),
        ('x "' + "a" * 4094 + '";y;', None),
        ('x "' + "a" * 4095 + '";y;', 'too long parameter "aaaaaaaaaa..." started in F:1'),
        ('x "' + "a" * 4096 + '";', 'too long parameter, probably missing terminating """ character in F:1'),
        ("x '" + "a" * 5000, "too long parameter, probably missing terminating \"'\" character in F:1"),
        ('x "' + "a" * 4096, 'unexpected end of file, expecting ";" or "}" in F:1'),
        ("x " + "a" * 4096, 'unexpected end of file, expecting ";" or "}" in F:1'),
        ("x " + "a" * 4097, 'too long parameter "aaaaaaaaaa..." started in F:1'),
        ("\n#" + "a" * 4094 + "\nx;", None),
        ("\n#" + "a" * 4095 + "\nx;", 'too long parameter "#aaaaaaaaa..." started in F:2'),
        ("x\n\"" + "a\n" * 3000 + '";', 'too long parameter, probably missing terminating """ character in F:2'),
        ("x \\" + "a" * 4094 + " y;", 'too long parameter "\\aaaaaaaaa..." started in F:1'),
        ("x" + " " * 4095 + "y;", None),
        # bytes, not characters: é is two
        ("x " + "\u00e9" * 2047 + "a;", None),
        ("x " + "\u00e9" * 2048 + ";", 'too long parameter "\u00e9\u00e9\u00e9\u00e9\u00e9..." started in F:1'),
    ],
)
def test_too_long_parameter(text, expected):
    if expected is None:
        parse(text, F)
    else:
        assert error(text) == expected.replace("F:", F + ":")


def test_buffer_is_nginx_conf_buffer():
    assert BUFFER == 4096


# -- -g text ----------------------------------------------------------------------------------------


def test_command_line():
    nodes = parse("a b; c 'd e';", COMMAND_LINE)
    assert shape(nodes) == [("a", ["b"], None), ("c", ["d e"], None)]
    assert {(n.file, n.line) for n in nodes} == {(COMMAND_LINE, 0)}
    assert parse("x " + "a" * 10000 + ";", COMMAND_LINE)[0].args[0] == "a" * 10000  # no buffer


@pytest.mark.parametrize(
    "text, expected",
    [
        ("foo bar", 'unexpected end of parameter, expecting ";"'),
        ("events {}", "block directives are not supported in -g option"),
        ("}", 'unexpected "}"'),
        (";", 'unexpected ";"'),
    ],
)
def test_command_line_errors(text, expected):
    assert error(text, COMMAND_LINE) == expected + " in command line"


# -- deferred errors: the nodes before the first problem are kept -------------------------------------


def test_read_keeps_nodes_before_the_error_in_every_open_block():
    top = read("a;\nhttp {\n b;\n server {\n c;\n", F)
    assert shape(top) == [("a", [], None), ("http", [], [("b", [], None), ("server", [], [("c", [], None)])])]
    err = top.error
    assert str(err) == f'unexpected end of file, expecting "}}" in {F}:6'
    assert top[1].children.error is err and top[1].children[1].children.error is err


def test_read_without_error():
    top = read("a { b; }", F)
    assert top.error is None and top[0].children.error is None


def test_read_stops_at_the_error():
    top = read("a;\n}\nb;", F)
    assert shape(top) == [("a", [], None)] and top.error.line == 2


# -- decode ------------------------------------------------------------------------------------------


def test_decode():
    assert decode("a \u00e9;".encode(), F) == "a \u00e9;"
    with pytest.raises(ConfigError) as info:
        decode(b"a;\nb \xff;\n", F)
    assert str(info.value) == f"invalid UTF-8 byte 0xff in {F}:2"


def test_config_error_str():
    assert str(ConfigError("m")) == "m"
    assert str(ConfigError("m", "")) == "m"
    assert str(ConfigError("m", F, 3)) == f"m in {F}:3"
    assert str(ConfigError("m", COMMAND_LINE, 0)) == "m in command line"


# -- properties ---------------------------------------------------------------------------------------

config_text = st.text(alphabet=st.sampled_from(list(' \t\n\r;{}#"\'\\$()abx\u00e9\x00')), max_size=200) | st.text(
    max_size=200
)


@settings(max_examples=500)
@given(config_text)
def test_any_text_gives_nodes_or_a_located_error(text):
    try:
        nodes = parse(text, F)
    except ConfigError as err:
        assert err.file == F and isinstance(err.line, int) and 1 <= err.line <= text.count("\n") + 1
        assert str(err) == f"{err.msg} in {F}:{err.line}"
    else:
        assert all(isinstance(n, Node) for n in nodes)


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_any_bytes_give_nodes_or_a_located_error(data):
    try:
        parse(decode(data, F), F)
    except ConfigError as err:
        assert err.file == F and err.line >= 1


@settings(max_examples=300)
@given(config_text)
def test_any_command_line_gives_nodes_or_an_error(text):
    try:
        parse(text, COMMAND_LINE)
    except ConfigError as err:
        assert str(err).endswith(" in command line")


def quote(word):
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def bare_or_quoted(word):
    return word if re.fullmatch(r"[^\s;{}\"'\\#]+", word) else quote(word)


def dump(nodes, style, indent=""):
    out = []
    for n in nodes:
        head = indent + " ".join(style(w) for w in [n.name, *n.args])
        if n.children is None:
            out.append(head + ";")
        else:
            out.append(head + " {")
            out.append(dump(n.children, style, indent + "    "))
            out.append(indent + "}")
    return "\n".join(out)


word = st.text(max_size=12)
tree = st.recursive(
    st.lists(st.builds(Node, word, st.lists(word, max_size=3), st.just(F), st.just(0), st.none()), max_size=3),
    lambda kids: st.lists(
        st.builds(Node, word, st.lists(word, max_size=3), st.just(F), st.just(0), kids | st.none()), max_size=3
    ),
    max_leaves=12,
)


@settings(max_examples=300)
@given(tree, st.sampled_from([quote, bare_or_quoted]))
def test_round_trip(nodes, style):
    assert shape(parse(dump(nodes, style), F)) == shape(nodes)
