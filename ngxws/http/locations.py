"""Server and location lookup, built once per cycle (nginx's ngx_http_find_virtual_server
and ngx_http_core_find_location).

Theory of operation
-------------------
Locations.  Each level (a server, or a location with nested locations) keeps:
``exact`` (a dict for ``=``), ``prefixes`` (plain and ``^~`` prefixes, longest first)
and ``regexes`` (``~``/``~*`` in the order they appear).  ``find(uri)`` does what
nginx does:

1. an ``=`` location equal to the URI wins at once;
2. otherwise the longest matching prefix is remembered; if it has nested
   locations, the search recurses into them, and a nested exact or regex match
   (or a nested prefix) replaces it;
3. unless that prefix was ``^~``, this level's regexes are tried in order and
   the first match wins (its own nested locations are searched in turn);
4. otherwise the remembered prefix stands; no match at all gives None.

Servers.  One ``VirtualServers`` per listen address: the default server (the
``default_server`` one, else the first to name this address), exact names in a
dict, ``*.example.com`` / ``.example.com`` heads and ``www.example.*`` tails
(the longest match wins, heads before tails) and ``~`` regexes in order.  Host
text is lower-cased, stripped of its port and of one trailing dot before the
lookup; ``valid_host`` rejects what nginx rejects.
"""

import re

__all__ = ["LocationTree", "VirtualServers", "AddressServers", "normalize_host", "LocationError"]


class LocationError(ValueError):
    """A location block nginx would refuse; str() is nginx's message."""


class LocationTree:
    """The locations of one level (a server, or a location's nested ones)."""

    __slots__ = ("exact", "prefixes", "regexes", "named")

    def __init__(self):
        #: uri -> conf
        self.exact = {}
        #: [(prefix, noregex, conf, subtree|None)] longest first
        self.prefixes = []
        #: [(compiled, conf, subtree|None)] in order of appearance
        self.regexes = []
        #: name -> conf (server level only)
        self.named = {}

    def add(self, modifier, name, conf, subtree=None):
        """modifier: '=', '^~', '~', '~*', '' (prefix) or '@' (named)."""
        if modifier == "=":
            if name in self.exact:
                raise LocationError('duplicate location "%s"' % name)
            self.exact[name] = conf
        elif modifier in ("", "^~"):
            for p in self.prefixes:
                if p[0] == name:
                    raise LocationError('duplicate location "%s"' % name)
            self.prefixes.append((name, modifier == "^~", conf, subtree))
            self.prefixes.sort(key=lambda p: len(p[0]), reverse=True)
        elif modifier in ("~", "~*"):
            try:
                rx = re.compile(name, re.IGNORECASE if modifier == "~*" else 0)
            except re.error as e:
                raise LocationError('pcre2_compile() failed: %s in "%s"' % (e.msg, name)) from None
            self.regexes.append((rx, conf, subtree))
        elif modifier == "@":
            if name in self.named:
                raise LocationError('duplicate location "%s"' % name)
            self.named[name] = conf
        else:
            raise LocationError('invalid location modifier "%s"' % modifier)

    def find(self, uri):
        """(conf, match) of the location for ``uri``; conf None when nothing matched.

        ``match`` is the re.Match of the regex location that won, else None.
        """
        _, conf, m = self._find(uri)
        return conf, m

    def _find(self, uri):
        # (final, conf, match): final when an exact or regex location decided
        conf = self.exact.get(uri)
        if conf is not None:
            return True, conf, None
        found = None
        noregex = False
        for prefix, nr, pconf, subtree in self.prefixes:
            if uri.startswith(prefix):
                found = pconf
                noregex = nr
                if subtree is not None:
                    final, nconf, m = subtree._find(uri)
                    if final:
                        return True, nconf, m
                    if nconf is not None:
                        found = nconf
                break
        if not noregex:
            for rx, rconf, subtree in self.regexes:
                m = rx.search(uri)
                if m is not None:
                    if subtree is not None:
                        _, nconf, nm = subtree._find(uri)
                        if nconf is not None:
                            return True, nconf, nm or m
                    return True, rconf, m
        return False, found, None


def _strip_port(host):
    if host.startswith("["):
        end = host.find("]")
        return host[:end + 1] if end != -1 else host
    i = host.find(":")
    return host if i == -1 else host[:i]


_BAD_HOST = re.compile(r"[/\\\x00-\x20\x7f]|\.\.")


#: a Host that normalize_host() surely takes (letters, digits, "-" in dot-separated labels, a
#: port): the common case, checked by one match instead of the whole normalization
PLAIN_HOST = re.compile(r"[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)*\.?(?::[0-9]*)?\Z")

#: Host value -> plain or not: a client (a push backend above all) sends the same Host again and
#: again, and a dict lookup is a third of the match; bounded, emptied when full
_PLAIN_HOSTS = {}
_PLAIN_HOSTS_MAX = 1024


def plain_host(host):
    """True when the Host value ``host`` (str) is PLAIN_HOST: letters, digits, dashes and dots,
    an optional port, nothing that nginx's validation would change or refuse."""
    ok = _PLAIN_HOSTS.get(host)
    if ok is None:
        ok = PLAIN_HOST.match(host) is not None
        if len(_PLAIN_HOSTS) >= _PLAIN_HOSTS_MAX:
            _PLAIN_HOSTS.clear()
        _PLAIN_HOSTS[host] = ok
    return ok


def normalize_host(raw):
    """nginx's ngx_http_validate_host: lower-cased host without port/trailing dot, or None if invalid."""
    host = _strip_port(raw.lower())
    if host.endswith("."):
        host = host[:-1]
    if not host or host.startswith(".") or _BAD_HOST.search(host):
        return None
    return host


class VirtualServers:
    """The servers of one listen address and how Host picks one of them."""

    __slots__ = ("default", "exact", "heads", "tails", "regexes", "servers")

    def __init__(self):
        self.default = None
        self.exact = {}
        #: [(suffix, conf)] for "*.example.com" (suffix ".example.com") and
        #: ".example.com" (also matches "example.com"), longest suffix first
        self.heads = []
        #: [(prefix, conf)] for "www.example.*" (prefix "www.example."), longest first
        self.tails = []
        self.regexes = []
        self.servers = []

    def add_server(self, conf, names, default=False):
        """names: server_name arguments of this server, as written."""
        if conf not in self.servers:
            self.servers.append(conf)
        if default or self.default is None:
            self.default = conf
        for name in names:
            if name.startswith("~"):
                self.regexes.append((re.compile(name[1:]), conf))
                continue
            name = name.lower()
            if name.startswith("*."):
                self._add(self.heads, name[1:], conf)
            elif name.startswith("."):
                self._add(self.heads, name, conf)
                self.exact.setdefault(name[1:], conf)
            elif name.endswith(".*"):
                self._add(self.tails, name[:-1], conf)
            else:
                self.exact.setdefault(name, conf)
        self.heads.sort(key=lambda e: len(e[0]), reverse=True)
        self.tails.sort(key=lambda e: len(e[0]), reverse=True)

    @staticmethod
    def _add(table, key, conf):
        for k, _ in table:
            if k == key:
                return      # nginx warns "conflicting server name" and keeps the first
        table.append((key, conf))

    def find(self, host):
        """The server conf for a normalized host (None or "" gives the default)."""
        if not host:
            return self.default
        conf = self.exact.get(host)
        if conf is not None:
            return conf
        for suffix, conf in self.heads:
            if host.endswith(suffix) and len(host) > len(suffix):
                return conf
        for prefix, conf in self.tails:
            if host.startswith(prefix) and len(host) > len(prefix):
                return conf
        for rx, conf in self.regexes:
            if rx.search(host):
                return conf
        return self.default


class AddressServers:
    """What a Listening's ``servers`` holds for HTTP: the VirtualServers per local address.

    A wildcard listen (``*:8080``) serves every address of its port, but servers
    that listen on a specific address of that port own the connections to it
    (nginx binds the wildcard only and dispatches with getsockname()).
    """

    __slots__ = ("by_addr", "wildcard", "single")

    def __init__(self, wildcard=None, by_addr=None):
        self.wildcard = wildcard
        self.by_addr = by_addr or {}
        #: the common case, one table and no getsockname() per connection
        self.single = wildcard if not self.by_addr else (
            next(iter(self.by_addr.values())) if wildcard is None and len(self.by_addr) == 1 else None)

    def lookup(self, conn):
        if self.single is not None:
            return self.single
        vs = self.by_addr.get(conn.local[0])
        return vs if vs is not None else self.wildcard
