"""The ``melanoma`` command: one entry point over the producer, worker and trainer services.

User mistakes (missing folder, unknown job, unreachable broker or database) end in one line
on stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import functools
import gc
import sys
from importlib.metadata import EntryPoint, entry_points

import click

from melanoma.core.errors import UserError, one_line

COMMAND_GROUP = "melanoma.commands"


class _ServiceCommands(click.Group):
    """The services (producer, worker, trainer) add their commands through the entry points of
    COMMAND_GROUP (pyproject.toml), so this core package never imports a service. A command's
    module is imported only when the command runs or is listed: `melanoma submit` imports neither
    the worker's nor the trainer's. Each command also keeps its heavy imports inside, so
    `melanoma submit` never loads TensorFlow."""

    @functools.cached_property
    def _entry_points(self) -> dict[str, EntryPoint]:
        found = {e.name: e for e in entry_points(group=COMMAND_GROUP)}
        if not found:
            raise RuntimeError(f"no {COMMAND_GROUP} entry points: install the project (pip install -e .)")
        return found

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._entry_points})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self._entry_points:
            self.add_command(self._entry_points[cmd_name].load(), cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=_ServiceCommands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="melanoma-scoring")
def cli() -> None:
    """Batch scoring of dermoscopic images: submit folders, follow jobs, read results."""


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the command, then exit the process with its status."""
    try:
        _run(argv)
    finally:
        # Python's exit collects every object still alive; after SQLAlchemy, pydantic and redis
        # are imported that walk takes 0.1-0.2 s (about 0.13 s of a one-image `submit --wait`).
        # Frozen objects are skipped: atexit handlers, stream flushing and refcount frees still run.
        gc.freeze()


def _run(argv: list[str] | None) -> None:
    try:
        cli.main(args=argv, prog_name="melanoma", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("melanoma: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except UserError as exc:  # melanoma.core.settings.SettingsError and melanoma.versions.registry.RegistryError too
        click.echo(f"melanoma: error: {one_line(exc)}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("melanoma: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        # Connection failures from SQLAlchemy, redis-py and kombu are user-fixable
        # (wrong URL, server down); anything else is a bug and keeps its traceback.
        from melanoma.core.connectivity import describe_connection_error

        message = describe_connection_error(exc)
        if message is None:
            raise
        click.echo(f"melanoma: error: {message}", err=True)
        sys.exit(1)
    sys.exit(0)


if __name__ == "__main__":
    main()
