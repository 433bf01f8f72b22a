"""Static files: nginx's static and index modules, as much as a demo page needs.

The path is ``root`` + the request's normalized ``uri``; normalization already
refused any ``..`` above the root, so the path cannot leave it (symbolic links
are followed, as nginx does by default).  A directory without its trailing
slash is redirected (301), a directory with one is served through ``index``
(403 when no index file exists), missing files are 404 and logged at ``error``
like nginx's ``open() "..." failed (2: No such file or directory)``.
Responses carry ``Last-Modified``, an nginx-style ``ETag`` and
``Accept-Ranges: bytes``; an ``If-Modified-Since`` equal to the file's time
gives a 304.  Files go out with sendfile(), never read whole into memory.
"""

import errno
import os
import stat
from email.utils import parsedate_to_datetime

__all__ = ["static_handler", "content_type"]


def content_type(loc, path):
    """The mime type for ``path`` from the location's types, else its default_type."""
    dot = path.rfind(".")
    if dot != -1 and "/" not in path[dot:]:
        t = loc.types.get(path[dot + 1:].lower())
        if t is not None:
            return t
    return loc.default_type


def _not_modified(r, mtime):
    ims = r.header(b"if-modified-since")
    if ims is None:
        return False
    try:
        ts = parsedate_to_datetime(ims.decode("latin-1")).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return False
    return int(ts) == int(mtime)


def static_handler(r):
    """The content handler of a location without one (nginx's static module)."""
    if r.method not in ("GET", "HEAD"):
        r.finalize(405)
        return
    loc = r.loc
    log = r.conn.log
    uri = r.uri
    root = loc.root
    path = root + uri
    if uri.endswith("/"):
        for name in loc.index:
            candidate = path + name
            try:
                st = os.stat(candidate)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                continue
            _serve(r, candidate, st)
            return
        try:
            st = os.stat(path)
        except OSError as e:
            log.error('"%s%s" is not found (%d: %s)', path, loc.index[0], e.errno, e.strerror)
            r.finalize(404)
            return
        log.error('directory index of "%s" is forbidden', path)
        r.finalize(403)
        return
    try:
        st = os.stat(path)
    except OSError as e:
        # nginx's static module: missing, not a directory, too long: 404; no permission: 403
        if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG, errno.EACCES):
            log.error('open() "%s" failed (%d: %s)', path, e.errno, e.strerror)
            r.finalize(403 if e.errno == errno.EACCES else 404)
        else:
            log.crit('open() "%s" failed (%d: %s)', path, e.errno, e.strerror)
            r.finalize(500)
        return
    if stat.S_ISDIR(st.st_mode):
        location = (r.head.path + "/").encode("latin-1")
        if r.args:
            location += b"?" + r.args.encode("latin-1")
        r.send_response(301, (), _page(r, 301), b"text/html", None, location)
        return
    _serve(r, path, st)


def _page(r, code):
    from .errors import error_page
    return error_page(code, r.loc.server_tokens)


def _serve(r, path, st):
    if not stat.S_ISREG(st.st_mode):
        r.finalize(404)
        return
    mtime = int(st.st_mtime)
    etag = (b'"%x-%x"' % (mtime, st.st_size))
    if _not_modified(r, mtime):
        r.send_response(304, ((b"ETag", etag),), None, None, mtime, None)
        return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        r.conn.log.error('open() "%s" failed (%d: %s)', path, e.errno, e.strerror)
        r.finalize(403 if e.errno == 13 else 404)
        return
    ctype = content_type(r.loc, path).encode("latin-1")
    r.hc.send_file(r, 200, ((b"ETag", etag), (b"Accept-Ranges", b"bytes")), fd, st.st_size, ctype, mtime)
