"""Command-line paths as users paste them: `+video=shot 01 – café.mp4` works unquoted.

Hydra's override grammar accepts only a small alphabet in unquoted values: accents, dashes
such as `–`, apostrophes, `#`, `@`, `&`, `!`, brackets and parentheses in a file name all make
its lexer fail with a multi-line error. Before Hydra sees the command line,
`prepare_overrides` rewrites the path keys (`PATH_KEYS`) of plain values into Hydra's quoted
form, checked by Hydra's own parser to give back exactly the text that was typed.

Two characters keep their Hydra meaning, because a path cannot be told from the syntax: a comma
(a sweep `a.mp4,b.mp4` under `-m`; sources are listed as `[a.jpg,b.jpg]`) and `=`. A value with
either is refused with a one-line error that shows the quoted form (exit 2), unless the command
is a multirun, where commas are sweeps.

`plain_render_overrides` backs a `fusionray render VIDEO SOURCE... [overrides]` form: paths as
plain arguments, the rest passed to Hydra.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path

from fusionray.errors import ConfigError

PATH_KEYS = ("video", "source", "output", "selection.reference_image")
"""Config keys whose values are file paths or URIs."""
_OVERRIDE = re.compile(r"^(?P<prefix>\+{0,2})(?P<key>[\w.]+)=(?P<value>.*)$", re.DOTALL)
_MULTIRUN_FLAGS = ("-m", "--multirun")


class PathArgumentError(ConfigError):
    """A path on the command line needs quoting that cannot be added for the user."""


def quote_value(value: str) -> str:
    """`value` as a single-quoted Hydra string that parses back to exactly `value` (pure).

    Quotes are escaped with a backslash; so are backslashes that would otherwise escape the
    closing quote, and `${`, which Hydra would resolve as an interpolation even inside quotes.

    >>> quote_value("it's.mp4")
    "'it\\\\'s.mp4'"
    """
    escaped = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
    escaped = escaped.replace("${", "\\${")
    trailing = len(escaped) - len(escaped.rstrip("\\"))
    return "'" + escaped + "\\" * trailing + "'"


def _parses_to(override: str) -> object:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([override])[0]
    return parsed.value()


def _needs_quoting(override: str, value: str) -> bool:
    from hydra.errors import OverrideParseException

    try:
        return _parses_to(override) != value
    except OverrideParseException:  # lexer and parser errors alike
        return True


def prepare_overrides(arguments: Sequence[str]) -> list[str]:
    """Quote the path values of `arguments` (Hydra overrides) that Hydra would refuse (pure).

    Values already quoted, lists (`[a.jpg,b.jpg]`), `null`, and values Hydra already reads
    verbatim are left as they are; other arguments pass unchanged.

    Raises:
        PathArgumentError: a path value holds a comma or `=` (outside a multirun for commas);
            the message shows the quoted form to type.
    """
    multirun = any(argument in _MULTIRUN_FLAGS for argument in arguments)
    prepared = []
    for argument in arguments:
        match = _OVERRIDE.match(argument)
        if match is None or match["key"] not in PATH_KEYS:
            prepared.append(argument)
            continue
        prefix, key, value = match["prefix"], match["key"], match["value"]
        if value[:1] in ("'", '"', "[") or value in ("", "null"):
            prepared.append(argument)
            continue
        quoted = f"{prefix}{key}={quote_value(value)}"
        if "=" in value or ("," in value and not multirun):
            character = "=" if "=" in value else ","
            meaning = ("separates a key from its value" if character == "=" else
                       "separates a sweep's values; sources are listed as [a.jpg,b.jpg]")
            raise PathArgumentError(
                f"{key} path {value!r} holds {character!r}, which Hydra reads as syntax (it "
                f"{meaning}): quote the path, \"{quoted}\""
            )
        if "," in value or ("${" not in value and not _needs_quoting(argument, value)):
            prepared.append(argument)
            continue
        # OmegaConf turns the escaped `\${` back into `${` when the config is resolved.
        if str(_parses_to(quoted)).replace("\\${", "${") != value:
            raise PathArgumentError(f"Cannot quote {key} path {value!r} for Hydra")
        prepared.append(quoted)
    return prepared


def plain_render_overrides(arguments: Sequence[str]) -> list[str]:
    """`VIDEO SOURCE... [overrides]` -> Hydra overrides (`fusionray render` form; pure but for
    checking which arguments name existing files).

    The first argument is the video; each following argument is a source image while it names
    an existing file or does not look like an override (`key=value`, `-flag`); the rest pass to
    Hydra through `prepare_overrides`.

    Raises:
        PathArgumentError: no video is given, or a path override needs quoting (see above).
    """
    if not arguments or _looks_like_override(arguments[0]):
        raise PathArgumentError("Usage: fusionray render VIDEO SOURCE... [overrides], e.g. "
                                "fusionray render 'shot 01.mov' face.jpg quality=master")
    video, rest = arguments[0], list(arguments[1:])
    sources: list[str] = []
    while rest and (Path(rest[0]).is_file() or not _looks_like_override(rest[0])):
        sources.append(rest.pop(0))
    overrides = [f"+video={quote_value(video)}"]
    if len(sources) == 1:
        overrides.append(f"+source={quote_value(sources[0])}")
    elif sources:
        overrides.append("+source=[" + ",".join(quote_value(s) for s in sources) + "]")
    return overrides + prepare_overrides(rest)


def _looks_like_override(argument: str) -> bool:
    return argument.startswith("-") or _OVERRIDE.match(argument) is not None


def rewrite_sys_argv() -> None:
    """Apply `prepare_overrides` to `sys.argv` before Hydra parses it; on a path that needs
    quoting, print the one-line error and exit 2 (bad input)."""
    try:
        sys.argv[1:] = prepare_overrides(sys.argv[1:])
    except PathArgumentError as error:
        print(f"fusionray: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
