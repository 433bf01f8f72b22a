"""RESP, Redis's protocol (RESP2 and RESP3), as a sans-IO codec: bytes in, replies out.

Theory of operation
-------------------
``Reader.feed(data)`` takes bytes as they arrive; ``Reader.gets()`` returns the next complete
reply, or ``NEED_DATA`` when the bytes so far end inside one.  The interface is hiredis's
``Reader`` (``feed``/``gets``, a not-enough-data sentinel, error replies returned as values, not
raised), so the driver (core/redis.py) takes either; ``make_reader()`` picks one.

Replies become Python values as hiredis makes them: simple and bulk strings -> ``bytes``
(verbatim strings without their ``txt:`` prefix), integers and big numbers -> ``int``, doubles ->
``float``, booleans -> ``bool``, nulls -> ``None``, arrays and sets -> ``list``, maps -> ``dict``
(a list of pairs when a key is itself an aggregate), pushes -> ``Push`` (a ``list``), error and
blob error replies -> a ``ReplyError`` instance.  An attribute (``|``) is metadata about the reply
that follows it; it is read and dropped.

The buffer is ``bytes`` plus a read position, because ``bytes`` slices are what replies are made
of (one copy per bulk string).  Bytes that arrive while the reply cannot progress (a long bulk
string in many reads) are only collected in a list: ``gets()`` joins them once enough are there,
so a large reply costs linear, not quadratic, copying.

An aggregate reply is read with an explicit stack of unfinished aggregates, never recursion, and
the stack survives a ``NEED_DATA``: parsing resumes where it stopped, so an array of many elements
that arrives in small pieces is read once.  A bulk string, or a line, whose end is not there yet is
re-read from its type byte on the next ``gets()``: only its header line is read twice.

Bounds: a declared bulk length over ``max_bulk_size``, an aggregate of more than ``max_elements``,
nesting deeper than ``max_depth``, a line longer than ``MAX_LINE`` without its CRLF, or more than
``max_buffer_size`` unread bytes, are each a ``ProtocolError`` at once: a peer cannot make this
reader hold more than those bounds.  Any malformed input is a ``ProtocolError`` too (h11's
contract: nothing else escapes), after which the reader stays broken: the stream has no reliable
resynchronisation point, so the connection must go.
"""

__all__ = ["Reader", "ReplyError", "ProtocolError", "Push", "NEED_DATA", "encode_command",
           "MAX_LINE", "make_reader", "READER_NAME"]

#: the longest line (type byte to CRLF) read: Redis's own inline limit is 64 KiB
MAX_LINE = 65536
#: defaults: Redis's proto-max-bulk-len is 512 MiB; a push server needs far less
MAX_BULK_SIZE = 64 * 1024 * 1024
MAX_ELEMENTS = 1024 * 1024
MAX_DEPTH = 32


class ProtocolError(Exception):
    """The bytes are not RESP, or exceed a bound: the connection cannot be used any more."""


class ReplyError(Exception):
    """An error reply from Redis (``-ERR ...``, ``!...``): a value, returned by ``gets()``."""


class Push(list):
    """A RESP3 push (``>``): out-of-band data such as a pub/sub message."""

    __slots__ = ()


class _NeedData:
    __slots__ = ()

    def __repr__(self):
        return "NEED_DATA"

    def __bool__(self):
        return False


#: what ``gets()`` returns while no complete reply is buffered (never a reply value: RESP3's
#: false is ``False``, which is why the sentinel is its own object)
NEED_DATA = _NeedData()

# aggregate kinds, in the stack's frames
_ARRAY = 0
_MAP = 1
_PUSH = 2
_ATTR = 3

_AGGREGATE = {42: _ARRAY, 126: _ARRAY, 37: _MAP, 62: _PUSH, 124: _ATTR}   # * ~ % > |
_BULKLIKE = (36, 33, 61)   # $ ! =


class Reader:
    """The RESP reader.  Not thread-safe; one per connection."""

    __slots__ = ("_buf", "_pos", "_chunks", "_more", "_need", "_stack", "_taken", "_broken",
                 "max_bulk_size", "max_elements", "max_depth", "max_buffer_size")

    def __init__(self, max_bulk_size=MAX_BULK_SIZE, max_elements=MAX_ELEMENTS, max_depth=MAX_DEPTH,
                 max_buffer_size=None):
        self._buf = b""
        self._pos = 0
        #: bytes fed since the last join, and their total length
        self._chunks = []
        self._more = 0
        #: the buffer length (from _pos) that lets gets() progress; 0: any data may
        self._need = 0
        #: unfinished aggregates, innermost last: [kind, elements still to read, items]
        self._stack = []
        #: bytes already read into the unfinished aggregates of ``_stack``
        self._taken = 0
        self._broken = None
        self.max_bulk_size = max_bulk_size
        self.max_elements = max_elements
        self.max_depth = max_depth
        #: bytes of one reply held at most (read into it or still unread); by default one bulk
        #: string of the largest size and its line
        self.max_buffer_size = (max_buffer_size if max_buffer_size is not None
                                else max_bulk_size + MAX_LINE)

    def feed(self, data, start=0, length=None):
        if self._broken is not None:
            raise ProtocolError(self._broken)
        if start or length is not None:
            data = bytes(data[start:start + length if length is not None else None])
        elif type(data) is not bytes:
            data = bytes(data)
        if not data:
            return
        self._chunks.append(data)
        self._more += len(data)
        if self._taken + len(self._buf) - self._pos + self._more > self.max_buffer_size:
            self._fail("a reply over %d bytes" % self.max_buffer_size)

    def has_data(self):
        return len(self._buf) > self._pos or self._more > 0

    def _fail(self, why):
        self._broken = why
        self._stack = []
        self._taken = 0
        self._chunks = []
        self._buf = b""
        self._pos = 0
        raise ProtocolError(why)

    def gets(self):
        """The next complete reply, or ``NEED_DATA``; raises ``ProtocolError`` on bad input."""
        if self._broken is not None:
            raise ProtocolError(self._broken)
        if self._chunks:
            if len(self._buf) - self._pos + self._more < self._need:
                return NEED_DATA
            chunks = self._chunks
            if self._pos < len(self._buf):
                chunks.insert(0, self._buf[self._pos:] if self._pos else self._buf)
            self._buf = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            self._pos = 0
            self._chunks = []
            self._more = 0
        buf = self._buf
        pos = self._pos
        end = len(buf)
        stack = self._stack
        find = buf.find
        first = pos
        try:
            while True:
                nl = find(b"\r\n", pos)
                if nl < 0:
                    if end - pos > MAX_LINE:
                        self._fail("a line longer than %d bytes" % MAX_LINE)
                    self._need = end - pos + 1
                    break
                t = buf[pos]
                if t == 36 or t == 33 or t == 61:   # $ ! =
                    n = int(buf[pos + 1:nl])
                    if n < 0:
                        if n != -1 or t != 36:
                            self._fail("invalid bulk length %d" % n)
                        value = None
                        pos = nl + 2
                    else:
                        if n > self.max_bulk_size:
                            self._fail("bulk length %d over %d" % (n, self.max_bulk_size))
                        start = nl + 2
                        stop = start + n
                        if stop + 2 > end:
                            self._need = stop + 2 - pos
                            break
                        if buf[stop:stop + 2] != b"\r\n":
                            self._fail("bulk string not terminated by CRLF")
                        pos = stop + 2
                        if t == 36:
                            value = buf[start:stop]
                        elif t == 61:
                            if n < 4 or buf[start + 3] != 58:   # "txt:"
                                self._fail("invalid verbatim string")
                            value = buf[start + 4:stop]
                        else:
                            value = ReplyError(buf[start:stop].decode("utf-8", "replace"))
                elif t == 43:   # +
                    value = buf[pos + 1:nl]
                    pos = nl + 2
                elif t == 58:   # :
                    value = int(buf[pos + 1:nl])
                    pos = nl + 2
                elif t == 45:   # -
                    value = ReplyError(buf[pos + 1:nl].decode("utf-8", "replace"))
                    pos = nl + 2
                elif t in _AGGREGATE:
                    n = int(buf[pos + 1:nl])
                    pos = nl + 2
                    kind = _AGGREGATE[t]
                    if n < 0:
                        if n != -1 or t != 42:
                            self._fail("invalid aggregate length %d" % n)
                        value = None
                    elif n > self.max_elements:
                        self._fail("aggregate of %d elements over %d" % (n, self.max_elements))
                    elif n == 0:
                        if kind == _ATTR:
                            continue
                        value = {} if kind == _MAP else Push() if kind == _PUSH else []
                    else:
                        if len(stack) >= self.max_depth:
                            self._fail("nesting deeper than %d" % self.max_depth)
                        if kind == _MAP or kind == _ATTR:
                            stack.append([kind, n * 2, []])
                            continue
                        # the common array: bulk strings only (a pub/sub message, a stream
                        # entry's fields), read here in one tight loop
                        items = []
                        append = items.append
                        max_bulk = self.max_bulk_size
                        left = n
                        while left and pos < end and buf[pos] == 36:
                            nl = find(b"\r\n", pos)
                            if nl < 0:
                                break
                            size = int(buf[pos + 1:nl])
                            if size < 0 or size > max_bulk:
                                break   # the general path says what is wrong, or reads a null
                            start = nl + 2
                            stop = start + size
                            if stop + 2 > end:
                                break
                            if buf[stop:stop + 2] != b"\r\n":
                                self._fail("bulk string not terminated by CRLF")
                            append(buf[start:stop])
                            pos = stop + 2
                            left -= 1
                        if left:
                            stack.append([kind, left, items])
                            continue
                        value = Push(items) if kind == _PUSH else items
                elif t == 95:   # _
                    if nl != pos + 1:
                        self._fail("invalid null")
                    value = None
                    pos = nl + 2
                elif t == 35:   # #
                    b = buf[pos + 1:nl]
                    if b == b"t":
                        value = True
                    elif b == b"f":
                        value = False
                    else:
                        self._fail("invalid boolean")
                    pos = nl + 2
                elif t == 44:   # ,
                    value = float(buf[pos + 1:nl])
                    pos = nl + 2
                elif t == 40:   # (
                    value = int(buf[pos + 1:nl])
                    pos = nl + 2
                else:
                    self._fail("invalid reply type byte %r" % bytes((t,)))

                # a value is complete: it ends the reply, or joins the aggregate it is in
                while stack:
                    frame = stack[-1]
                    items = frame[2]
                    items.append(value)
                    frame[1] -= 1
                    if frame[1]:
                        break
                    stack.pop()
                    kind = frame[0]
                    if kind == _ARRAY:
                        value = items
                    elif kind == _PUSH:
                        value = Push(items)
                    elif kind == _MAP:
                        value = _make_map(items)
                    else:
                        # an attribute describes the next value: drop it, read that value
                        break
                else:
                    self._pos = pos
                    self._need = 0
                    self._taken = 0
                    if pos == end:
                        self._buf = b""
                        self._pos = 0
                    return value
        except ValueError:
            # int() or float() of something that is not a number
            self._fail("invalid number")
        self._pos = pos
        if stack:
            self._taken += pos - first
        return NEED_DATA


def _make_map(items):
    it = iter(items)
    pairs = list(zip(it, it))
    try:
        return dict(pairs)
    except TypeError:
        # an aggregate as a key (legal RESP3, never sent by Redis's commands)
        return pairs


def encode_command(args):
    """A command (a sequence of bytes, str, int or float arguments) as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    append = out.append
    for a in args:
        t = type(a)
        if t is str:
            a = a.encode("utf-8")
        elif t is int:
            a = b"%d" % a
        elif t is float:
            a = repr(a).encode("ascii")
        elif t is not bytes:
            if not isinstance(a, (bytes, bytearray, memoryview)):
                raise TypeError("invalid redis command argument %r" % (a,))
            a = bytes(a)
        append(b"$%d\r\n" % len(a))
        append(a)
        append(b"\r\n")
    return b"".join(out)


def make_reader(**bounds):
    """A Reader with these bounds: hiredis's when that is installed (it measured faster), else ours."""
    if _hiredis is None:
        return Reader(**bounds)
    return _HiredisReader(**bounds)


class _HiredisReader:
    """hiredis's Reader behind our interface: the same values, errors and bounds as ``Reader``."""

    __slots__ = ("_r", "_held", "max_buffer_size", "max_bulk_size")

    def __init__(self, max_bulk_size=MAX_BULK_SIZE, max_elements=MAX_ELEMENTS, max_depth=MAX_DEPTH,
                 max_buffer_size=None):
        # hiredis bounds aggregates itself (maxelements); the unread bytes are counted here, so
        # a bulk string over the bound fails once that many bytes are unread
        self._r = _hiredis.Reader(protocolError=ProtocolError, replyError=ReplyError,
                                  notEnoughData=NEED_DATA)
        self.max_bulk_size = max_bulk_size
        self.max_buffer_size = (max_buffer_size if max_buffer_size is not None
                                else max_bulk_size + MAX_LINE)
        self._held = 0

    def feed(self, data):
        self._r.feed(data)
        self._held += len(data)
        if self._held > self.max_buffer_size:
            self._r = None
            raise ProtocolError("over %d unread bytes" % self.max_buffer_size)

    def gets(self):
        if self._r is None:
            raise ProtocolError("reader failed")
        try:
            value = self._r.gets()
        except TypeError:
            # a map with an aggregate key
            self._r = None
            raise ProtocolError("unhashable map key") from None
        if value is NEED_DATA:
            self._held = self._r.len()
        elif type(value) is _hiredis.PushNotification:
            value = Push(value)
        return value

    def has_data(self):
        return self._r is not None and self._r.has_data()


try:
    import hiredis as _hiredis
except ImportError:
    # the optional ngxws[redis] extra is not installed: the hand-written reader serves
    _hiredis = None

#: which reader ``make_reader()`` makes, for the log
READER_NAME = "hiredis %s" % _hiredis.__version__ if _hiredis is not None else "ngxws"
