"""The HTTP module protocol (nginx's ngx_http_module_t).

An HTTP module's confs live at three levels: one main conf per ``http`` block,
a server conf per ``server`` and a location conf per ``location`` (and one of
each kind at the levels above, so that a value written at ``http`` level can be
inherited).  After the block is read, the core merges each level into the one
below it (http -> server -> location -> nested location), the way
ngx_http_block() does, then calls every module's ``postconfiguration``.

Conf objects are usually dataclasses whose fields start at ``UNSET``; merge
with ``core.directives.merge(child, parent, **defaults)``.
"""

from ..core.module import Module

__all__ = ["HttpModule"]


class HttpModule(Module):
    def create_http_main_conf(self, cf):
        """The conf of this module's http-main directives (Slot.MAIN inside ``http``)."""
        return None

    def init_http_main_conf(self, cf, conf):
        """Fill the main conf's defaults once the http block is read."""

    def create_srv_conf(self, cf):
        """A conf for Slot.SRV, made at the http level and for every server."""
        return None

    def create_loc_conf(self, cf):
        """A conf for Slot.LOC, made at the http and server levels and for every location."""
        return None

    def merge_srv_conf(self, parent, child):
        """Fill ``child`` (a server's) from ``parent`` (the http level's); may raise ConfigError."""

    def merge_loc_conf(self, parent, child):
        """Fill ``child`` from ``parent`` (http -> server -> location -> nested location)."""

    def postconfiguration(self, cf, http_conf):
        """After every level is merged; ``http_conf`` is the core's HttpMainConf."""
