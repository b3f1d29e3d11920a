"""What every ``ofa-sdk`` command shares: error mapping, ``--json``, ``-v/-q``, logging, options.

Errors become one line on stderr (or, under ``--json``, one JSON document on stdout) and their
exit code in one place: `OfaGroup.main` for click's usage errors, `OfaGroup.invoke` for `OfaError`.
Logging is set up once, on the ``ofa_sdk`` logger only (never the root logger, so
huggingface_hub's own handler is not doubled).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from typing import Any, Callable

import click

from ofa_sdk.constants import PRECISION_CHOICES, RUNTIME_CHOICES
from ofa_sdk.errors import NoModelFitsBudget, OfaError

__all__ = ["OfaGroup", "OfaCommand", "json_option", "emit_json", "format_error",
           "BudgetType", "BUDGET", "runtime_option", "threads_option",
           "zoo_option", "revision_option", "device_option", "pick_runtime_option",
           "precision_option", "is_quiet", "warn_threads", "budget_text", "pick_options"]

_JSON_KEY = "ofa_sdk.json"
_VERBOSITY_KEY = "ofa_sdk.verbosity"


def format_error(err: OfaError) -> tuple[str, int]:
    """The message and exit code the CLI shows for ``err``."""
    message = str(err)
    if (isinstance(err, NoModelFitsBudget) and err.fastest is not None
            and str(err.fastest) not in message):
        fastest = f"{err.fastest}" + (f" ({err.fastest_ms:.2f} ms)" if err.fastest_ms else "")
        message += f"; fastest option: {fastest}"
    return message, err.exit_code


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))


def _json_error(kind: str, message: str, code: int, **extra: Any) -> None:
    emit_json({"error": kind, "message": message, "exit_code": code, **extra})


def _wants_json(args: list[str]) -> bool:
    head = args[:args.index("--")] if "--" in args else args
    return "--json" in head


# ---- logging -------------------------------------------------------------------------------------

class _EchoHandler(logging.Handler):
    """Writes records to whatever ``sys.stderr`` is at the time (click's test runner swaps it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            click.echo(self.format(record), err=True)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def configure_logging(verbosity: int) -> None:
    """One handler on the ``ofa_sdk`` logger; ``verbosity`` -1 quiet, 0 warnings, 1 info, 2 debug.

    huggingface_hub keeps its own handler; only its level follows ours (its env variables are
    set too, for the case where it is imported later, as it reads them once at import).
    """
    level = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    log = logging.getLogger("ofa_sdk")
    handler = next((h for h in log.handlers if isinstance(h, _EchoHandler)), None)
    if handler is None:
        handler = _EchoHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
    log.setLevel(level)
    hf_level = {-1: "error", 0: "warning", 1: "info"}.get(verbosity, "debug")
    if "huggingface_hub" not in sys.modules:  # it applies these once, when imported
        os.environ["HF_HUB_VERBOSITY"] = hf_level
        if verbosity < 0:
            os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    logging.getLogger("huggingface_hub").setLevel(hf_level.upper())


def _verbosity(ctx: click.Context) -> int:
    return ctx.find_root().meta.get(_VERBOSITY_KEY, 0)


def is_quiet() -> bool:
    """True under ``-q`` or ``--json`` (without ``-v``): no progress bars, no warnings."""
    ctx = click.get_current_context(silent=True)
    return ctx is not None and _verbosity(ctx) < 0


def _set_verbosity(delta: int) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        count = int(value or 0)
        if not count:
            return
        root = ctx.find_root().meta
        now = root.get(_VERBOSITY_KEY, 0)
        root[_VERBOSITY_KEY] = -1 if delta < 0 else max(now, 0) + count
        configure_logging(root[_VERBOSITY_KEY])

    return callback


def verbosity_params() -> list[click.Option]:
    """``-v/--verbose`` and ``-q/--quiet``, accepted on the group and on every command."""
    return [
        click.Option(["-v", "--verbose"], count=True, expose_value=False, is_eager=True,
                     callback=_set_verbosity(+1),
                     help="More logging on stderr (-v info, -vv debug), runtime logs included."),
        click.Option(["-q", "--quiet"], is_flag=True, expose_value=False, is_eager=True,
                     callback=_set_verbosity(-1),
                     help="Only errors on stderr: no warnings, no progress bars."),
    ]


class OfaCommand(click.Command):
    """A command that also takes ``-v``/``-q`` (so they work after the subcommand too)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.extend(verbosity_params())


class OfaGroup(click.Group):
    """A click group that turns errors into a message on stderr and the error's exit code.

    Under ``--json`` the error is instead written to stdout as ``{"error", "message",
    "exit_code"}`` and stderr stays empty; click's usage errors (a bad option) included.
    """

    command_class = OfaCommand
    group_class = type  # subgroups are OfaGroups too

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.extend(verbosity_params())

    def main(self, args: Any = None, prog_name: str | None = None, **extra: Any) -> Any:
        if extra.get("standalone_mode") is False:
            return super().main(args, prog_name, **extra)
        args = list(sys.argv[1:] if args is None else args)
        as_json = self._as_json = _wants_json(args)
        configure_logging(-1 if as_json else 0)
        try:
            code = super().main(args, prog_name, standalone_mode=False, **extra)
        except click.ClickException as e:
            if as_json:
                _json_error(type(e).__name__, e.format_message(), e.exit_code)
            else:
                e.show()
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        if _JSON_KEY not in ctx.meta:
            ctx.meta[_JSON_KEY] = getattr(ctx.find_root().command, "_as_json", False)
        if ctx.meta[_JSON_KEY] and _VERBOSITY_KEY not in ctx.find_root().meta:
            ctx.find_root().meta[_VERBOSITY_KEY] = -1
        try:
            return super().invoke(ctx)
        except OfaError as err:
            message, code = format_error(err)
            if ctx.meta.get(_JSON_KEY):
                extra = {}
                if isinstance(err, NoModelFitsBudget) and err.fastest is not None:
                    extra = {"fastest": str(err.fastest), "fastest_ms": err.fastest_ms}
                _json_error(type(err).__name__, message, code, **extra)
            else:
                click.echo(f"Error: {message}", err=True)
            ctx.exit(code)


def json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--json`` to a command; it arrives as the ``as_json`` keyword."""

    @click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
    @functools.wraps(func)
    def wrapper(*args: Any, as_json: bool, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        ctx.meta[_JSON_KEY] = as_json
        if as_json and _verbosity(ctx) == 0:
            ctx.find_root().meta[_VERBOSITY_KEY] = -1
            configure_logging(-1)
        return func(*args, as_json=as_json, **kwargs)

    return wrapper


# ---- shared options ------------------------------------------------------------------------------

class BudgetType(click.ParamType):
    """A latency budget: ``20ms``, ``20 ms``, ``0.02s`` or ``20`` (ms) -> float ms."""

    name = "BUDGET"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> float:
        from ofa_sdk.budget import parse_budget
        from ofa_sdk.errors import BudgetError

        if isinstance(value, float):
            return value
        try:
            ms = parse_budget(value)
        except BudgetError as e:
            self.fail(str(e), param, ctx)
        if ctx is not None:
            ctx.find_root().meta[_BUDGET_KEY] = str(value)
        return ms


BUDGET = BudgetType()
_BUDGET_KEY = "ofa_sdk.budget_text"


def budget_text(ms: float) -> str:
    """``20 ms``; with the text given when it was not plain ms: ``20000 ms (given as '20s')``."""
    ctx = click.get_current_context(silent=True)
    raw = ctx.find_root().meta.get(_BUDGET_KEY) if ctx is not None else None
    text = f"{ms:g} ms"
    if raw is not None and raw.replace(" ", "").lower() not in (f"{ms:g}", f"{ms:g}ms"):
        text += f" (given as {raw!r})"
    return text


def warn_threads(threads: int | None) -> None:
    """Warn when more threads are asked for than this process may run on."""
    from ofa_sdk.device import usable_cores

    cores = usable_cores()
    if threads is not None and threads > cores:
        logging.getLogger("ofa_sdk.cli").warning(
            "--threads %d is more than the %d core%s this process can use; latencies will be "
            "worse than with --threads %d", threads, cores, "" if cores == 1 else "s", cores)


runtime_option = click.option(
    "--runtime", type=click.Choice(RUNTIME_CHOICES), default="auto", show_default=True,
    help="Runtime to use; auto picks it from the file suffix.")
threads_option = click.option(
    "--threads", type=click.IntRange(min=1), default=None,
    help="CPU threads for the runtime (default: the cores this process can use).")
pick_threads_option = click.option(
    "--threads", type=click.IntRange(min=1), default=None,
    help="CPU threads (default: chosen from the zoo's device classes and this device's cores).")
zoo_option = click.option(
    "--zoo", "zoo_source", default=None, envvar="OFA_SDK_ZOO", show_envvar=True,
    help="Zoo folder or hf://org/name[@revision] (default: the bundled zoo).")
revision_option = click.option("--revision", default=None,
                               help="Branch, tag or commit of an hf:// zoo.")
device_option = click.option(
    "--device", default="auto", show_default=True,
    help="'auto' (this device, measured) or a device class id of the zoo.")
pick_runtime_option = click.option(
    "--runtime", type=click.Choice(RUNTIME_CHOICES), default="auto",
    show_default=True, help="Runtime; auto measures every installed one.")
precision_option = click.option(
    "--precision", type=click.Choice(PRECISION_CHOICES), default="auto", show_default=True,
    help="Precision; auto measures fp32 and int8 where the zoo has both.")


def pick_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """What chooses a pick: ``--device --runtime --precision --threads --zoo --revision``."""
    for option in (revision_option, zoo_option, pick_threads_option, precision_option,
                   pick_runtime_option, device_option):
        func = option(func)
    return func
