"""The ordered list of modules (nginx's objs/ngx_modules.c).

Order matters: a module's directives are looked up in this order, and its
hooks run in it.  HTTP modules come after the core; the WebSocket modules
after HTTP.  Each is imported plainly: a module that fails to import is a bug,
and ngxws does not start without it.
"""

from .core.core_module import CoreModule, EventsModule
from .http.core_module import HttpCoreModule
from .http.log_module import HttpLogModule
from .http.stub_status import StubStatusModule
from .websocket.module import WebSocketModule
from .websocket.upstream import UpstreamModule

MODULES = (
    CoreModule(),
    EventsModule(),
    HttpCoreModule(),
    HttpLogModule(),
    StubStatusModule(),
    WebSocketModule(),
    UpstreamModule(),
)
