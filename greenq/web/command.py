"""The `greenq web` command: serve the dashboard with gevent's WSGI server.
greenq.cli adds it to the `greenq` group (and monkey-patches first, so
Redis calls of concurrent requests do not block one another).

It listens on 127.0.0.1 by default; on any other address it refuses to
start without a password (--password or $GREENQ_WEB_PASSWORD): exit 2."""

from __future__ import annotations

import logging
import signal
import sys

import click

from ..cli import EXIT_USAGE, common_options, existing_queue
from .auth import is_loopback
from .server import listener

log = logging.getLogger("greenq.web")


@click.command("web")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but a loopback address needs a password.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="Port to listen on (0: any free port; the log line says which).")
@click.option("--read-only", is_flag=True,
              help="Show everything, change nothing: no retry, delete or cancel.")
@click.option("--password", envvar="GREENQ_WEB_PASSWORD", default=None,
              help="Every page asks for it (HTTP basic auth, any user name). Prefer "
                   "$GREENQ_WEB_PASSWORD: a command line is visible to other users.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"],
              case_sensitive=False), default="info", show_default=True,
              help="Lowest level logged to stderr (requests are logged at info).")
@common_options
def web(host, port, read_only, password, log_level, redis_url, namespace, queue_id):
    """Serve the dashboard, /metrics and /api/stats until SIGTERM/SIGINT."""
    from gevent import pywsgi, signal_handler

    from . import make_app

    if password == "":
        password = None
    if password is None and not is_loopback(host):
        click.echo(f"greenq: refusing to serve the dashboard on {host} without a password: "
                   "give --password or set $GREENQ_WEB_PASSWORD (or listen on 127.0.0.1)",
                   err=True)
        sys.exit(EXIT_USAGE)
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s greenq[%(process)d] %(levelname)s %(name)s: %(message)s")
    queue = existing_queue(redis_url, namespace, queue_id)
    app = make_app(queue, read_only=read_only, password=password)
    server = pywsgi.WSGIServer(listener(host, port), app, log=logging.getLogger("greenq.web.access"),
                               error_log=logging.getLogger("greenq.web.error"))
    server.start()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal_handler(signum, server.stop)
    bound_host, bound_port = server.address[:2]
    log.info("serving the dashboard of %r on http://%s:%d/%s%s", queue,
             bound_host if ":" not in bound_host else f"[{bound_host}]", bound_port,
             " (read-only)" if read_only else "", " (password required)" if password else "")
    server.serve_forever()
    log.info("stopped")


COMMANDS = [web]
