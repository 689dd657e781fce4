"""What every namespace's tasks share: the settings of a profile, errors as exit codes, and
`task`, invoke's decorator with the house rules for options:

- one letter, one meaning: a short flag exists only for the options of SHORT_FLAGS, the same
  letter for the same option in every task (invoke's automatic letters gave `-p` to
  --profile in one task and --param in another);
- typed options: an option annotated `int`, `float`, `Seconds` (10m, 2h) or a `Literal` of
  choices reaches the parser as text and is parsed before the task's body runs, so a value
  of the wrong form ends with one line naming the option and the form, exit 100 (invoke's
  own casting raised a traceback and exited 1);
- a value that looks like an option (`run-batch --jbo x` fills the job with `--jbo`) is
  refused as the unknown option it is.
"""

from __future__ import annotations

import contextlib
import difflib
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from invoke import Exit, Task
from invoke import task as invoke_task

from mlbatch.core import options
from mlbatch.core.errors import ExitCode

ROOT = Path(__file__).resolve().parent.parent  # the checkout: invoke.yaml, batch_code/, packer/, ...
PROFILE_HELP = "settings profile: local (default), gcp, or test (the gcp code path against emulators)"
FORMAT_HELP = "table (aligned columns, for people) or json (for machines)"

# The only short flags, each with one meaning in every task that has the option.
SHORT_FLAGS = {
    "profile": "p",
    "job": "j",
    "version": "v",
    "follow": "f",
    "dry_run": "n",
    "output_dir": "o",
    "keep": "k",
    "apply": "a",
}


def _parser_of(hint: Any) -> Callable[[Any, str], Any] | None:
    """How an option annotated `hint` is parsed from its text, or None for plain text:
    `Annotated[int, parse]` (options.Seconds, options.Positive) by `parse`, int, float and
    a Literal of choices by their own parsers; `X | None` as X."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        return next((meta for meta in args[1:] if callable(meta)), None) or _parser_of(args[0])
    if origin is typing.Union or isinstance(hint, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        return _parser_of(rest[0]) if len(rest) == 1 else None
    if origin is typing.Literal:
        return lambda value, option: options.choice(value, option, [str(a) for a in args])
    parsers: dict[Any, Callable[[Any, str], Any]] = {int: options.whole_number, float: options.number}
    return parsers.get(hint)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


class MlbatchTask(Task):
    """invoke's Task with SHORT_FLAGS and typed options (see the module's docstring)."""

    def __init__(self, body: Callable, **kwargs: Any) -> None:
        kwargs["auto_shortflags"] = False
        super().__init__(body, **kwargs)
        hints = typing.get_type_hints(body, include_extras=True)
        self.parsers = {name: p for name, hint in hints.items() if (p := _parser_of(hint)) is not None}

    def get_arguments(self, ignore_unknown_help: bool | None = None) -> list[Any]:
        # invoke's arg_opts pops each help text as it uses it: a second parser (a test's, then the
        # program's) would get none. Keep them.
        kept = dict(self.help)
        try:
            return super().get_arguments(ignore_unknown_help)
        finally:
            self.help = kept

    def arg_opts(self, name: str, default: str, taken_names: set[str]) -> dict[str, Any]:
        opts = super().arg_opts(name, default, taken_names)
        if name in SHORT_FLAGS:
            opts["names"].append(SHORT_FLAGS[name])
        if name in self.parsers:
            opts["kind"] = str  # parsed in __call__, where a bad value gets a clear message
        return opts

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        for name in self.positional:
            value = kwargs.get(name)
            if isinstance(value, str) and value.startswith("-"):
                raise Exit(self.unknown_option(value), code=ExitCode.BAD_INPUT)
        with errors():
            for name, parse in self.parsers.items():
                if isinstance(kwargs.get(name), str):
                    kwargs[name] = parse(kwargs[name], flag(name))
        return super().__call__(*args, **kwargs)

    def flags(self) -> list[str]:
        return [flag(name) for name in self.argspec(self.body).parameters]

    def unknown_option(self, token: str) -> str:
        return unknown_option(token, self.flags())


def unknown_option(token: str, known: list[str], task_name: str = "") -> str:
    """One line: the unknown option, the task's options, and the nearest one."""
    near = difflib.get_close_matches(token.split("=", 1)[0], known, n=1)
    hint = f" (did you mean {near[0]}?)" if near else ""
    expected = f"expected one of {', '.join(known)}" if known else "it takes no option"
    return f"mlbatch{' ' + task_name if task_name else ''}: unknown option {token}: {expected}{hint}"


def task(*args: Any, **kwargs: Any) -> Any:
    """invoke's @task, making an MlbatchTask."""
    return invoke_task(*args, klass=MlbatchTask, **kwargs)


def settings(c, profile=None):
    """The validated settings of `profile` (default: mlbatch.profile of invoke's config)."""
    from mlbatch.core.settings import load_settings

    config = dict(c.config.get("mlbatch", {}))
    if profile:
        config["profile"] = profile
    return load_settings(config, ROOT)


@contextlib.contextmanager
def errors():
    """MlbatchError -> a clear message and its reserved exit code (see README, "Exit codes")."""
    from mlbatch.core.errors import MlbatchError

    try:
        yield
    except MlbatchError as exc:
        raise Exit(f"mlbatch: {exc}", code=int(exc.exit_code)) from None


def exit_with(code: int) -> None:
    """End the task with a run's exit code (the job's own, or a reserved one) unless it is 0."""
    if code:
        raise Exit(code=code)
