"""Where a server's settings come from: the command line, the environment, a TOML file, defaults.

Every flag of a server can also be given as an environment variable named after the server and
the flag (`--data-dir` of minilog is `MINILOG_DATA_DIR`, `--fsync` of minibroker is
`MINIBROKER_FSYNC`) or as a key of a TOML file named by `--config FILE` (or `MINIBROKER_CONFIG`):
the flag's name without the dashes (`data-dir = "/var/lib/minilog"`, `port = 9093`; `_` works
for `-` too). Keys at the top of the file apply to the server reading it; a `[minibroker]` or
`[minilog]` table applies to that server only, so one file can serve both (`make run`).

Precedence, highest first: **flag > environment variable > config file > default**. A switch
(a flag without a value, such as `--no-auto-create-topics`) takes `true`/`false` in the file
and `1/true/yes/on` or `0/false/no/off` in the environment. A flag that may be repeated
(`--user`) takes a list in the file and adds to what the other sources give.

Each source is parsed through the server's own argparse parser, so a bad value is refused by
the same checks as on the command line, and the one-line error names where it came from
(`MINIBROKER_PORT: 99999 is not a port number`, `brokers.toml: unknown key 'prot'`).
"""

import argparse
import os
import sys

try:
    import tomllib
except ImportError:  # Python 3.10 has no tomllib; the project needs 3.11, this keeps --help working
    tomllib = None

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_SKIPPED = {"help", "config"}


class SettingsError(Exception):
    """A bad flag, environment variable or config key: one line saying which and why."""


def env_name(server: str, flag: str) -> str:
    return f"{server.upper()}_{flag.lstrip('-').replace('-', '_').upper()}"


def _long_flags(parser) -> dict[str, argparse.Action]:
    """{flag name without dashes: action} for every long option but --help and --config."""
    flags = {}
    for action in parser._actions:
        for opt in action.option_strings:
            if opt.startswith("--") and opt[2:] not in _SKIPPED:
                flags[opt[2:]] = action
    return flags


def _tokens(flag: str, action, value, where: str) -> list[str]:
    """The command-line tokens that say `flag = value`."""
    if action.nargs == 0:
        if isinstance(value, str):
            low = value.strip().lower()
            if low not in _TRUE | _FALSE:
                raise SettingsError(f"{where}: --{flag} is a switch; give true or false, not {value!r}")
            value = low in _TRUE
        if not isinstance(value, bool):
            raise SettingsError(f"{where}: --{flag} is a switch; give true or false, not {value!r}")
        return [f"--{flag}"] if value else []
    if isinstance(action, argparse._AppendAction) and isinstance(value, list):
        out = []
        for item in value:
            out += [f"--{flag}", str(item)]
        return out
    if isinstance(value, (dict, list)):
        raise SettingsError(f"{where}: --{flag} takes one value, not {type(value).__name__} {value!r}")
    if isinstance(value, bool):
        value = str(value).lower()
    return [f"--{flag}", str(value)]


def _check(parser, tokens: list[str], where: str) -> None:
    """Parse `tokens` alone, so a bad value is blamed on the source it came from."""
    def fail(message):
        raise SettingsError(f"{where}: {message.replace('argument ', '', 1)}")
    saved, parser.error = parser.error, fail
    try:
        parser.parse_args(tokens)
    finally:
        parser.error = saved


def from_environment(parser, server: str, environ) -> list[str]:
    tokens = []
    for flag, action in _long_flags(parser).items():
        name = env_name(server, flag)
        if name in environ:
            part = _tokens(flag, action, environ[name], name)
            _check(parser, part, name)
            tokens += part
    return tokens


def from_file(parser, server: str, path: str) -> list[str]:
    if tomllib is None:
        raise SettingsError(f"{path}: reading TOML needs Python 3.11 or later")
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise SettingsError(f"--config {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}") from None
    flags = _long_flags(parser)
    others = {"minibroker", "minilog"} - {server}
    items = [(k, v) for k, v in doc.items() if not (isinstance(v, dict) and (k == server or k in others))]
    section = doc.get(server, {})
    if not isinstance(section, dict):
        raise SettingsError(f"{path}: [{server}] must be a table")
    tokens = []
    for key, value in items + list(section.items()):
        flag = key.replace("_", "-")
        if flag not in flags:
            raise SettingsError(f"{path}: unknown key {key!r} for {server} (keys are its flags without "
                                f"the dashes: {server} --help)")
        part = _tokens(flag, flags[flag], value, f"{path}: {key}")
        _check(parser, part, f"{path}: {key}")
        tokens += part
    return tokens


def parse_settings(parser, server: str, argv=None, environ=None) -> argparse.Namespace:
    """Parse `argv` over the environment over `--config`; exit with one line on a bad setting."""
    argv = sys.argv[1:] if argv is None else list(argv)
    environ = os.environ if environ is None else environ

    def one_line(message):
        parser.exit(2, f"{server}: {message} (see {server} --help)\n")
    parser.error = one_line
    try:
        first = parser.parse_args(argv)   # the command line alone: its own errors, and --config
        config = first.config or environ.get(env_name(server, "config"))
        file_tokens = from_file(parser, server, config) if config else []
        env_tokens = from_environment(parser, server, environ)
    except SettingsError as exc:
        parser.exit(2, f"{server}: {exc}\n")
    return parser.parse_args(file_tokens + env_tokens + argv)
