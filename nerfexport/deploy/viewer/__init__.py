"""``nerfexport view``: a local web viewer for bundles, rendered by the lean renderer (no torch).

``session`` opens the bundles and renders frames (one at a time per bundle, the newest request
first), ``request`` checks what a browser asks for, ``server`` is the HTTP server (the standard
library's) and ``static/`` the page (plain HTML and JavaScript, nothing fetched from elsewhere).
"""

from nerfexport.deploy.viewer.server import ViewerError, is_local, make_server, serve

__all__ = ["ViewerError", "is_local", "make_server", "serve"]
