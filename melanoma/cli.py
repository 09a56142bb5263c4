"""The ``melanoma`` command: one entry point over the producer, worker and trainer services.

User mistakes (missing folder, unknown job, unreachable broker or database) end in one line
on stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import gc
import sys

import click

from melanoma.errors import UserError, one_line


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="melanoma-scoring")
def cli() -> None:
    """Batch scoring of dermoscopic images: submit folders, follow jobs, read results."""


COMMAND_GROUP = "melanoma.commands"


def _register() -> None:
    # The services (producer, worker, trainer) add their commands through the entry points of
    # COMMAND_GROUP (pyproject.toml), so this core package never imports a service. Each command
    # keeps its heavy imports inside, so `melanoma submit` never loads TensorFlow.
    from importlib.metadata import entry_points

    found = sorted(entry_points(group=COMMAND_GROUP), key=lambda e: e.name)
    if not found:
        raise RuntimeError(f"no {COMMAND_GROUP} entry points: install the project (pip install -e .)")
    for ep in found:
        cli.add_command(ep.load(), ep.name)


_register()


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
    from melanoma.registry import RegistryError
    from melanoma.settings import SettingsError

    try:
        cli.main(args=argv, prog_name="melanoma", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("melanoma: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (UserError, SettingsError, RegistryError) as exc:
        click.echo(f"melanoma: error: {one_line(exc)}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("melanoma: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        # Connection failures from SQLAlchemy, redis-py and kombu are user-fixable
        # (wrong URL, server down); anything else is a bug and keeps its traceback.
        from melanoma.connectivity import describe_connection_error

        message = describe_connection_error(exc)
        if message is None:
            raise
        click.echo(f"melanoma: error: {message}", err=True)
        sys.exit(1)
    sys.exit(0)


if __name__ == "__main__":
    main()
