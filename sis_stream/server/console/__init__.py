"""The browser console of the local server: ``GET /console/`` (experience center) and
``GET /console/monitor`` (service monitoring).

Modules: :mod:`.session` (login sessions behind an HttpOnly, SameSite=Strict cookie, and the
cookie check the server's auth middleware calls), :mod:`.monitor` (the in-memory ring of metric
samples behind the monitor page's sparklines), :mod:`.routes` (the console's routes and
``setup_console(app)``, which the server assembler calls). The pages themselves are static files
in ``static/`` (HTML, ES modules, one CSS file; nothing is loaded from outside the server).

This package file imports nothing, so the auth middleware can import :mod:`.session` without
pulling the route modules in.
"""
