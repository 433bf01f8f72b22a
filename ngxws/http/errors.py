"""Status lines and nginx's small HTML error pages, byte for byte.

The texts were read off real nginx 1.22 (``return CODE;`` for every code): the
status line reason and the page title differ for some codes (302 says "Moved
Temporarily" in the status line and "Found" in the page), codes nginx has no
text for get a status line with an empty reason and no page, and 494 ("request
header too large") goes out as a 400 with an extra line.  Everything here is
built once at import; a response costs a dict lookup.
"""

from .. import NGINX_VER

__all__ = ["STATUS_LINES", "status_line", "error_page", "HttpError", "KEEPALIVE_BREAKING",
           "REQUEST_HEADER_TOO_LARGE", "CLOSE_WITHOUT_RESPONSE"]

#: nginx's pseudo-status for "request header or cookie too large", sent as 400
REQUEST_HEADER_TOO_LARGE = 494
#: nginx's 444: close the connection and send nothing; 499 (client closed) and 408 too
CLOSE_WITHOUT_RESPONSE = frozenset((408, 444, 499))
#: errors after which nginx drops keep-alive
KEEPALIVE_BREAKING = frozenset((400, 413, 414, 494, 500, 501))

_REASONS = {
    100: "Continue", 101: "Switching Protocols",
    200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 206: "Partial Content",
    301: "Moved Permanently", 302: "Moved Temporarily", 303: "See Other", 304: "Not Modified",
    307: "Temporary Redirect", 308: "Permanent Redirect",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
    404: "Not Found", 405: "Not Allowed", 406: "Not Acceptable", 408: "Request Time-out",
    409: "Conflict", 410: "Gone", 411: "Length Required", 412: "Precondition Failed",
    413: "Request Entity Too Large", 414: "Request-URI Too Large", 415: "Unsupported Media Type",
    416: "Requested Range Not Satisfiable", 421: "Misdirected Request", 429: "Too Many Requests",
    500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Temporarily Unavailable", 504: "Gateway Time-out",
    505: "HTTP Version Not Supported", 507: "Insufficient Storage",
}

# page titles where they differ from the status line's reason
_TITLES = {302: "Found", 401: "Authorization Required"}

#: codes that have an HTML page (the others answer with an empty body)
_PAGED = (301, 302, 303, 307, 308, 400, 401, 402, 403, 404, 405, 406, 408, 409, 410, 411, 412, 413,
          414, 415, 416, 421, 429, 500, 501, 502, 503, 504, 505, 507)

STATUS_LINES = {code: ("HTTP/1.1 %d %s\r\n" % (code, reason)).encode() for code, reason in _REASONS.items()}
STATUS_LINES[REQUEST_HEADER_TOO_LARGE] = STATUS_LINES[400]


def status_line(code):
    """``HTTP/1.1 NNN Reason\\r\\n``; unknown codes get nginx's empty reason."""
    line = STATUS_LINES.get(code)
    if line is None:
        line = ("HTTP/1.1 %03d \r\n" % code).encode()
    return line


def _tail(tokens):
    return ("<hr><center>%s</center>\r\n</body>\r\n</html>\r\n" % tokens).encode()


def _head(code):
    if code == REQUEST_HEADER_TOO_LARGE:
        return (b"<html>\r\n<head><title>400 Request Header Or Cookie Too Large</title></head>\r\n"
                b"<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n"
                b"<center>Request Header Or Cookie Too Large</center>\r\n")
    text = "%d %s" % (code, _TITLES.get(code) or _REASONS[code])
    return ("<html>\r\n<head><title>%s</title></head>\r\n<body>\r\n<center><h1>%s</h1></center>\r\n"
            % (text, text)).encode()


_PAGES_ON = {code: _head(code) + _tail(NGINX_VER) for code in _PAGED + (REQUEST_HEADER_TOO_LARGE,)}
_PAGES_OFF = {code: _head(code) + _tail("ngxws") for code in _PAGED + (REQUEST_HEADER_TOO_LARGE,)}


def error_page(code, server_tokens=True):
    """nginx's HTML body for ``code``, or None when nginx sends none."""
    return (_PAGES_ON if server_tokens else _PAGES_OFF).get(code)


class HttpError(Exception):
    """A request that ends in an error status (nginx's ngx_http_finalize_request(r, CODE)).

    ``message`` is what goes to the error log (nginx's wording), at ``level``
    (a core/log.py level number; info unless nginx says otherwise).
    """

    def __init__(self, status, message=None, level=7):
        super().__init__(message or str(status))
        self.status = status
        self.message = message
        self.level = level
