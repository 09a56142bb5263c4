"""``melanoma serve``: start the results viewer."""

from __future__ import annotations

import ipaddress
import socket

import click

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """True when ``host`` only listens on this machine (127.0.0.0/8, ::1, localhost)."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:  # a host name: loopback only if every address it stands for is
            infos = socket.getaddrinfo(host, None)
        except OSError:
            return False
        return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on.")
def serve_command(host: str, port: int) -> None:
    """Start the results viewer: jobs, a grid of each job's images sorted by P(melanoma), image pages
    with heat maps. Listens on 127.0.0.1 unless told otherwise; any other address needs a password
    (MELANOMA_WEB_PASSWORD_FILE)."""
    from melanoma.core.errors import UserError
    from melanoma.core.settings import get_settings
    from melanoma.viewer.app import create_app, read_password

    settings = get_settings()
    if not is_loopback(host) and read_password(settings) is None:
        raise UserError(
            f"refusing to serve patient images on {host} without authentication: "
            "set MELANOMA_WEB_PASSWORD_FILE (or listen on 127.0.0.1)"
        )
    import uvicorn

    app = create_app(settings)
    click.echo(f"melanoma viewer on http://{host}:{port}/ (database {settings.redacted_database_url()})", err=True)
    uvicorn.run(app, host=host, port=port, log_level="info", server_header=False, proxy_headers=False)
