"""What every ``stylecore`` command's arguments share: a help formatter that shows each option's default, one
name per concept across commands (the old names still accepted, with a deprecation note), and the documented
exit codes."""

from __future__ import annotations

import argparse
import sys

#: the exit status of every command (``stylecore --help`` and the README list them)
EXIT_CODES = {
    0: "success (including nothing to do: every output already there)",
    1: "it ran, but some items failed (each named on stderr); the others are written",
    2: "bad arguments or input, refused before any model loads or anything is computed",
    130: "interrupted (Ctrl-C); what was finished is kept, and the same command resumes",
}


def exit_codes_epilog() -> str:
    return "exit codes:\n" + "\n".join(f"  {code:<4} {meaning}" for code, meaning in EXIT_CODES.items())


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """argparse's ArgumentDefaultsHelpFormatter without its noise: an option's default is appended where it has
    one worth saying (not None, False or an empty list) and its help does not already say it; descriptions and
    epilogs keep their line breaks (the exit-code table, serve's examples)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (not action.option_strings or default is None or default is False or default == argparse.SUPPRESS
                or default == []
                or "default" in text or isinstance(action, argparse.BooleanOptionalAction)):
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


class RenamedOption(argparse.Action):
    """A value option whose first name is current and whose other names are old ones: they still work, and
    using one says (on stderr) which name replaced it. Made by :func:`add_renamed`."""

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string is not None and option_string != self.option_strings[0]:
            print(f"{parser.prog}: {option_string} is the old name of {self.option_strings[0]}; use "
                  f"{self.option_strings[0]} (the old name still works, for now)", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_renamed(parser: argparse.ArgumentParser, name: str, *old_names: str, **kwargs) -> argparse.Action:
    """``parser.add_argument(name, *old_names, **kwargs)`` with the old names as deprecated aliases (named in the
    help). The value lands at ``name``'s dest."""
    kwargs.setdefault("dest", name.lstrip("-").replace("-", "_"))
    kwargs["help"] = f"{kwargs.get('help', '')} ({', '.join(old_names)}: the old name, deprecated)".lstrip()
    return parser.add_argument(name, *old_names, action=RenamedOption, **kwargs)


def finish(parser: argparse.ArgumentParser, subparsers: argparse._SubParsersAction) -> None:
    """Give the top-level parser and every command (entry-point ones included) the shared formatter, the exit
    codes as epilog, and a description: the one-line help it was listed with where it has none."""
    commands = [parser, *subparsers.choices.values()]
    listed = {action.dest: action.help for action in subparsers._choices_actions}
    for command in commands:
        command.formatter_class = HelpFormatter
        command.epilog = command.epilog or exit_codes_epilog()
        if command is not parser:
            command.description = command.description or listed.get(command.prog.split()[-1])
