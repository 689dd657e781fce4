"""`mlbatch`: the same tasks as `invoke`, with every command-line mistake exiting 100.

invoke's parser reports an unknown option, a missing value or a missing argument with its
own message and exit code 1, which the README reserves for a job's own code: a scheduler
could not tell a typo from a job that returned 1. This is an invoke `Program` over the same
`tasks` collection (found as invoke finds it: from the working directory up, or
`--search-root`), whose parse errors become one line naming the option and the form it
expects, with exit code 100 (`ExitCode.BAD_INPUT`). Everything else is invoke's: the
settings in invoke.yaml and `INVOKE_MLBATCH_*`, `--help`, `--list`, completion.

What a task's options may hold (typed values, an option given where an argument goes) is
checked by the tasks themselves (tasks/common.py), so `invoke` refuses those with 100 too.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import sys
from collections.abc import Iterator

from invoke import Exit, ParseError, Program
from invoke.parser import ParserContext

from mlbatch import __version__
from mlbatch.core.errors import ExitCode
from mlbatch.core.process import exiting, starting

_UNKNOWN = re.compile(r"^No idea what '(?P<token>.*)' is!$", re.S)
_NEEDS_VALUE = re.compile(r"^Flag <Argument: (?P<name>[^ >]+).*needed value and was not given one!$", re.S)
_NO_VALUE = re.compile(r"^Flag <Argument: (?P<name>[^ >]+).*doesn't take any value!$", re.S)
_MISSING = re.compile(r"^'(?P<task>[^']+)' did not receive required positional arguments: (?P<names>.*)$", re.S)


def _long(name: str) -> str:
    return "--" + name.replace("_", "-")


def _flags(context: ParserContext) -> list[str]:
    return [_long(arg.name) for arg in context.args.values()]


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())


class MlbatchProgram(Program):
    """invoke's Program, with its parse errors as one line and exit code 100."""

    def parse_core(self, argv):
        with self._mistakes():
            super().parse_core(argv)

    def parse_tasks(self) -> None:
        with self._mistakes():
            super().parse_tasks()
        self._list_values(list(self.core.unparsed))

    def _list_values(self, tokens: list[str]) -> None:
        """A repeatable option (`--param`, `--sweep`) given no value: invoke keeps an empty list and
        says nothing, so the run would go on without what was meant. Refused here, as invoke's
        parser refuses a missing value of any other option."""
        contexts = {name: ctx for ctx in self.parser.contexts.values() for name in (ctx.name, *ctx.aliases)}
        context = None
        for i, token in enumerate(tokens):
            if token in contexts and (context is None or token not in context.flags):
                context = contexts[token]
                continue
            if context is None or token not in context.flags:
                continue
            arg = context.flags[token]
            after = tokens[i + 1] if i + 1 < len(tokens) else None
            if arg.kind is list and (after is None or after.startswith("-") or after in contexts):
                raise Exit(
                    f"mlbatch {context.name}: option {_long(arg.name)} needs a value: {self._help(context, arg.name)}",
                    code=ExitCode.BAD_INPUT,
                )

    def parse_cleanup(self) -> None:
        with self._mistakes():
            super().parse_cleanup()

    def execute(self) -> None:
        try:
            super().execute()
        except KeyboardInterrupt:
            # invoke exits 1, a job's code; Ctrl-C of a command is a cancellation (README, "Exit codes").
            raise Exit("mlbatch: interrupted (Ctrl-C)", code=ExitCode.CANCELLED) from None

    @contextlib.contextmanager
    def _mistakes(self) -> Iterator[None]:
        try:
            yield
        except ParseError as exc:
            raise Exit(self.explain(str(exc), exc.context), code=ExitCode.BAD_INPUT) from None
        except ValueError as exc:  # a typed option of a task that is not an MlbatchTask
            raise Exit(f"mlbatch: invalid option value: {_one_line(str(exc))}", code=ExitCode.BAD_INPUT) from None

    def _task_names(self) -> list[str]:
        collection = getattr(self, "collection", None)
        if collection is None:
            return []
        return sorted({*collection.task_names, *(a for aliases in collection.task_names.values() for a in aliases)})

    def explain(self, message: str, context: ParserContext | None) -> str:
        """invoke's parse error as one line naming the option and what it expects."""
        task = context.name if context is not None else None
        where = f"mlbatch {task}" if task else "mlbatch"
        if task and context is not None:
            for arg in context.positional_args:  # `run-batch --jbo x`: the typo filled the job
                if isinstance(arg.value, str) and arg.value.startswith("-"):
                    return self._unknown(where, arg.value, _flags(context))
        if match := _UNKNOWN.match(message):
            token = match["token"]
            if task and context is not None and token.startswith("-"):
                return self._unknown(where, token, _flags(context))
            near = difflib.get_close_matches(token, self._task_names(), n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            if task:
                return f"{where}: unexpected {token!r}: not an option of {task} nor a task{hint} (see mlbatch --help {task})"
            return f"mlbatch: unknown task {token!r}: see mlbatch --list{hint}"
        if match := _NEEDS_VALUE.match(message):
            return f"{where}: option {_long(match['name'])} needs a value: {self._help(context, match['name'])}"
        if match := _NO_VALUE.match(message):
            return f"{where}: option {_long(match['name'])} takes no value: {self._help(context, match['name'])}"
        if match := _MISSING.match(message):
            names = re.findall(r"'([^']+)'", match["names"])
            wanted = "; ".join(f"{n.upper()} (or {_long(n)}): {self._help(context, n)}" for n in names)
            return f"mlbatch {match['task']}: missing {wanted}"
        return f"{where}: {_one_line(message)}"

    @staticmethod
    def _unknown(where: str, token: str, known: list[str]) -> str:
        option = token.split("=", 1)[0]
        near = difflib.get_close_matches(option, known, n=1)
        hint = f" (did you mean {near[0]}?)" if near else ""
        return f"{where}: unknown option {option}: expected one of {', '.join(known) or 'none'}{hint}"

    @staticmethod
    def _help(context: ParserContext | None, name: str) -> str:
        if context is None:
            return "see mlbatch --help"
        arg = context.args.get(name) or context.args.get(name.replace("_", "-"))
        if arg is None:  # a core flag (--search-root, ...)
            return "see mlbatch --help"
        return _one_line(arg.help) or f"see mlbatch --help {context.name}"


program = MlbatchProgram(name="mlbatch", binary="mlbatch", binary_names=["mlbatch"], version=__version__)


def main() -> None:
    starting()  # the process starts here: invoke is loaded, the task's modules are to come
    try:
        program.run(sys.argv)
    except BrokenPipeError:  # `mlbatch runs | head` read enough: no traceback for that
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        exiting()  # the process ends here
