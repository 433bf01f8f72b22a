"""The ordered list of modules (nginx's objs/ngx_modules.c).

Order matters: a module's directives are looked up in this order, and its
hooks run in it.  HTTP modules come after the core; the WebSocket modules
after HTTP.
"""

from .core.core_module import CoreModule, EventsModule


def _load():
    modules = [CoreModule(), EventsModule()]
    # Each optional room is imported by name, so that a half-built package
    # does not take the core down with it during development.
    try:
        from .http.core_module import HttpCoreModule
    except ImportError:
        return tuple(modules)
    modules.append(HttpCoreModule())
    for path, name in (("ngxws.http.log_module", "HttpLogModule"),
                       ("ngxws.http.stub_status", "StubStatusModule"),
                       ("ngxws.websocket.module", "WebSocketModule"),
                       ("ngxws.websocket.upstream", "UpstreamModule")):
        try:
            mod = __import__(path, fromlist=[name])
        except ImportError:
            continue
        cls = getattr(mod, name, None)
        if cls is not None:
            modules.append(cls())
    return tuple(modules)


MODULES = _load()
