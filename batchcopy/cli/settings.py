"""Option values from the environment and from a TOML config file, under the flags:
flag > BATCHCOPY_<OPTION> > config file > built-in default, for every option of every
command, without touching the options themselves.

- **Environment**: `--log-format` is `BATCHCOPY_LOG_FORMAT`, `--max-in-flight`
  `BATCHCOPY_MAX_IN_FLIGHT`: `BATCHCOPY_` and the option's long name, upper case, `-` as
  `_`. A flag takes true/false (1/0, yes/no, on/off): `BATCHCOPY_QUIET=1`,
  `BATCHCOPY_MERGE=false`; a repeatable option takes its values separated by spaces
  (`BATCHCOPY_RATE="CopyImageSet=5 GetImageSet=50"`); `-v` a count (`BATCHCOPY_VERBOSE=2`).
- **Config file**: `--config PATH`, else `$BATCHCOPY_CONFIG`, else
  `$XDG_CONFIG_HOME/batchcopy/config.toml` (`~/.config/batchcopy/config.toml`; that one
  may be absent). Sections as pip's config: `[global]` for every command that has the
  option, `[run]`, `[verify]`... for one command (they win over `[global]`); keys are
  long option names (`log-format` or `log_format`); TOML types (`quiet = true`,
  `max-in-flight = 50`, `rate = ["CopyImageSet=5"]`) or strings.
- Never from either: `--yes`, `--fresh`, `--force`, `--dry-run` (a standing setting must
  not skip a question or discard a journal in a later, unrelated command), and `--help`.

Click does the layering (`Context.default_map` under `envvar` under the command line);
this module names the variables, reads the file into the command's default map from an
eager `--config` option, and says where a bad value came from: one line naming the
variable, or the file, section and key (exit 2, like every usage error). The emulator's
commands are left alone (they have a `--config` of their own).
"""

from __future__ import annotations

import copy
import difflib
import functools
import os
from pathlib import Path
from typing import Any, Optional

from batchcopy.cli.help import ENV_PREFIX

try:  # typer >= 0.20 vendors click
    from typer._click.exceptions import BadParameter
    from typer._click.globals import get_current_context
except ImportError:  # pragma: no cover - older typer
    from click import BadParameter, get_current_context  # type: ignore[no-redef]

CONFIG_ENV = f"{ENV_PREFIX}CONFIG"
GLOBAL = "global"
PER_INVOCATION = frozenset({"--yes", "--fresh", "--force", "--dry-run", "--help", "--config"})
_ORIGINS = "batchcopy.origins"  # ctx.meta: param name -> where its value came from


class ConfigError(Exception):
    """A config file that cannot be used: one line naming the file (and section, key)."""


def long_name(param: Any) -> str | None:
    """`--max-in-flight` of an option that may come from the environment or the file; None
    for arguments and for what is never set that way."""
    if param.param_type_name != "option":
        return None
    names = [o for o in param.opts if o.startswith("--")]
    if not names or names[0] in PER_INVOCATION:
        return None
    return names[0]


def env_name(option: str) -> str:
    return ENV_PREFIX + option.lstrip("-").upper().replace("-", "_")


def key_of(text: str) -> str:
    """A config key or an option name, compared: `log-format`, `log_format`, `--log-format`."""
    return text.lstrip("-").lower().replace("_", "-")


def default_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or "~/.config"
    return Path(base).expanduser() / "batchcopy" / "config.toml"


def settable(command: Any) -> dict[str, Any]:
    """{config key: param} of the options `command` takes from the environment and file."""
    return {key_of(name): p for p in command.params if (name := long_name(p))}


def install(command: Any) -> None:
    """Give every option of `command` its BATCHCOPY_<OPTION> variable (before any it had),
    and add `--config`."""
    for param in command.params:
        name = long_name(param)
        if name is None:
            continue
        own = param.envvar
        own = [] if own is None else [own] if isinstance(own, str) else list(own)
        if env_name(name) not in own:
            param.envvar = [env_name(name), *own]
    if not any("--config" in p.opts for p in command.params):
        command.params.append(config_option(command.name or "COMMAND"))


def config_option(command: str) -> Any:
    """The `--config` option of `command`: eager, so its file is read before the options
    that may take their values from it."""
    option = copy.copy(_config_param())
    option.help = (
        f"TOML file of option values: \\[global] for every command, \\[{command}] for this one; "
        f"keys are option names (log-format = \"json\"). Default: "
        f"$XDG_CONFIG_HOME/batchcopy/config.toml, or ${CONFIG_ENV}. Any option can also be "
        f"set as {ENV_PREFIX}<OPTION> ({ENV_PREFIX}LOG_FORMAT=json). A flag wins over the "
        "environment, the environment over the file, the file over the default.")
    return option


@functools.cache
def _config_param() -> Any:
    """typer builds the click parameter (its classes differ between releases)."""
    import typer

    holder = typer.Typer()

    @holder.command()
    def config(path: Optional[str] = typer.Option(
            None, "--config", metavar="PATH", envvar=CONFIG_ENV, is_eager=True,
            expose_value=False, callback=_load, show_envvar=False, show_default=False)) -> None:
        """Never run: holds the option."""

    return next(p for p in typer.main.get_command(holder).params if "--config" in p.opts)


def _load(ctx: Any, param: Any, value: Optional[str]) -> None:
    """--config's callback (eager: before every other option is read): the file's values
    for this command become the context's default map."""
    if ctx.resilient_parsing:
        return
    path = Path(value).expanduser() if value else default_path()
    try:
        values, origins = read_config(path, ctx.command, ctx.find_root().command,
                                      required=bool(value))
    except ConfigError as exc:
        raise BadParameter(str(exc), ctx=ctx, param=param,
                                 param_hint=_hint(ctx, param)) from None
    if values:
        ctx.default_map = {**(ctx.default_map or {}), **values}
        ctx.meta[_ORIGINS] = origins


def _hint(ctx: Any, param: Any) -> str:
    source = ctx.get_parameter_source(param.name)
    if source is not None and source.name == "ENVIRONMENT":
        return f"'--config' (from {CONFIG_ENV})"
    return "'--config'"


def read_config(path: Path, command: Any, root: Any, *,
                required: bool) -> tuple[dict[str, Any], dict[str, str]]:
    """({param name: value}, {param name: origin}) for `command` from the file at `path`.
    Every section and key of the file is checked against the commands under `root`, so a
    typo anywhere is found by whichever command reads the file first."""
    import tomllib

    try:
        with path.open("rb") as fh:
            doc = tomllib.load(fh)
    except FileNotFoundError:
        if required:
            raise ConfigError(f"no such file: {path}") from None
        return {}, {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    commands = configurable(root)
    known_everywhere = {k for c in commands.values() for k in settable(c)}
    for section, table in doc.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {section} = ... is outside a section: put it under "
                              f"[{GLOBAL}] (every command) or under a command's section ([run])")
        if section != GLOBAL and section not in commands:
            raise ConfigError(f"{path}: unknown section [{section}]{_did_you_mean(section, [GLOBAL, *commands])}")
        keys = known_everywhere if section == GLOBAL else set(settable(commands[section]))
        for key in table:
            if f"--{key_of(key)}" in PER_INVOCATION:
                raise ConfigError(f"{path} [{section}] {key}: --{key_of(key)} is never read "
                                  "from a file or the environment: give it on the command line")
            if key_of(key) not in keys:
                where = "no command" if section == GLOBAL else f"`batchcopy {section}`"
                raise ConfigError(f"{path} [{section}] {key}: {where} has no option "
                                  f"--{key_of(key)}{_did_you_mean(key_of(key), keys)}")
    mine = settable(command)
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for section in (GLOBAL, command.name):
        for key, value in (doc.get(section) or {}).items():
            param = mine.get(key_of(key))
            if param is None:
                continue  # a [global] key another command takes
            values[param.name] = _value(param, value, f"{path} [{section}] {key}")
            origins[param.name] = f"{path} [{section}] {key}"
    return values, origins


def configurable(root: Any) -> dict[str, Any]:
    """{name: command} of the commands under `root` that read the environment and file."""
    return {name: cmd for name, cmd in (getattr(root, "commands", None) or {}).items()
            if any(p.opts == ["--config"] and p.envvar == CONFIG_ENV for p in cmd.params)}


def _value(param: Any, value: Any, where: str) -> Any:
    many = getattr(param, "multiple", False)
    if isinstance(value, list) and not many:
        raise ConfigError(f"{where}: one value expected, got a list")
    if isinstance(value, dict):
        raise ConfigError(f"{where}: a value expected, got a table")
    if many and not isinstance(value, list):
        value = [value]
    return [str(v) for v in value] if many else value


def _did_you_mean(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, sorted(choices), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def origin(ctx: Any, param: Any) -> str | None:
    """Where `param`'s value came from, if not the command line or the default: the
    environment variable, or the config file, section and key."""
    source = ctx.get_parameter_source(param.name)
    if source is None:
        return None
    if source.name == "ENVIRONMENT":
        names = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or ())
        return next((n for n in names if os.environ.get(n)), None)
    if source.name == "DEFAULT_MAP":
        return (ctx.meta.get(_ORIGINS) or {}).get(param.name)
    return None


def explain(exc: Any) -> None:
    """Name, in a usage error about a parameter, where its value came from."""
    param, ctx = getattr(exc, "param", None), getattr(exc, "ctx", None)
    if param is None or ctx is None or getattr(exc, "param_hint", None) is not None:
        return
    where = origin(ctx, param)
    if where:
        exc.param_hint = f"'{param.opts[0]}' (from {where})"


def option_origin(option: str) -> str | None:
    """Where the value of `option` (`--retry-backoff`) of the running command came from,
    for errors found after parsing (cli/options.fail)."""
    ctx = get_current_context(silent=True)
    if ctx is None:
        return None
    param = next((p for p in ctx.command.params if option in getattr(p, "opts", ())), None)
    return None if param is None else origin(ctx, param)
