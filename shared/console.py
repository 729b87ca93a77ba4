"""The CLI edge shared by both commands: build settings once, and turn errors into one line and an exit code."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.text import Text

from audiosim.shared.errors import AudiosimError, ConfigError
from audiosim.shared.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130

err_console = Console(stderr=True, highlight=False, soft_wrap=True)

# The global options both CLIs take before their command, in each app's callback.
StoreOpt = Annotated[Path | None, typer.Option(help="Embedded store directory \\[env AUDIOSIM_STORE].")]
CollectionOpt = Annotated[str | None, typer.Option(help="Collection name \\[env AUDIOSIM_COLLECTION].")]
QdrantUrlOpt = Annotated[
    str | None, typer.Option(help="Qdrant server URL; server mode when set \\[env AUDIOSIM_QDRANT_URL].")
]
ModelOpt = Annotated[Path | None, typer.Option(help="Encoder checkpoint \\[env AUDIOSIM_MODEL].")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Log details and show tracebacks.")]


@dataclass
class State:
    settings: Settings
    debug: bool = False
    quiet: bool = False


def build_settings(**overrides: Any) -> Settings:
    """Settings from the environment and .env, with the CLI options that were given on top."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"bad setting {where} (AUDIOSIM_{where.upper()}): {first['msg']}") from None


def setup_logging(debug: bool, quiet: bool = False) -> None:
    level = logging.DEBUG if debug else logging.ERROR if quiet else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s", stream=sys.stderr, force=True)


def state(ctx: typer.Context) -> State:
    obj = ctx.find_root().obj
    if not isinstance(obj, State):
        raise RuntimeError("command run without its app callback")
    return obj


def _debug_requested(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    for value in (*args, *kwargs.values()):
        if isinstance(value, typer.Context) and isinstance(value.find_root().obj, State):
            return value.find_root().obj.debug
    return "--debug" in sys.argv


def fail(message: str, code: int = EXIT_ERROR) -> typer.Exit:
    err_console.print(Text.assemble(("error: ", "bold red"), message))
    return typer.Exit(code)


def errors_to_exit(fn: F) -> F:
    """Typed errors become `error: <one line>` on stderr and a non-zero exit; --debug shows the traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.BadParameter):
            raise
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except AudiosimError as exc:
            if _debug_requested(args, kwargs):
                raise
            raise fail(str(exc), exc.exit_code) from None
        except Exception as exc:
            if _debug_requested(args, kwargs):
                raise
            text = str(exc).strip().split("\n")[0]
            raise fail(f"unexpected {type(exc).__name__}: {text} (run with --debug for the traceback)") from None

    return wrapper  # type: ignore[return-value]


def check_writable(path: Path, option: str) -> None:
    """Refuse an output file that cannot be written, before the work whose result it would hold."""
    parent = path.expanduser().absolute().parent
    if path.is_dir():
        raise ConfigError(f"{option} {path}: is a folder; name a file")
    if not parent.is_dir():
        raise ConfigError(f"{option} {path}: folder {parent} does not exist")
    if not os.access(path if path.exists() else parent, os.W_OK):
        raise ConfigError(f"{option} {path}: permission denied")


@errors_to_exit
def cli_settings(**overrides: Any) -> Settings:
    """build_settings for an app callback: a bad setting is one line and an exit code (a traceback with --debug)."""
    return build_settings(**overrides)
