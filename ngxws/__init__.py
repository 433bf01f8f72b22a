"""ngxws: the nginx worker architecture in Python, serving as a WebSocket push server."""

__version__ = "0.1.0"
NGINX_VER = "ngxws/" + __version__
