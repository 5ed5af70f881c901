"""Command lines as launched: wrappers peeled off, `sh -c` scripts split, base64 decoded.

Detectors that judge an exec by its argv (miners, tunnels) must see through the ways people
start programs: `nohup nice -n 19 ./x ...`, `screen -dmS s ./x ...`, `bash -c "cd /tmp; ./x"`
and `echo <base64> | base64 -d | sh`. Everything here is pure and bounded.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
import shlex
from dataclasses import dataclass
from typing import Iterator, Sequence

# wrapper -> (its options that take a value, positional arguments before the command)
WRAPPERS: dict[str, tuple[frozenset, int]] = {
    "nice": (frozenset({"-n", "--adjustment"}), 0),
    "nohup": (frozenset(), 0),
    "setsid": (frozenset(), 0),
    "timeout": (frozenset({"-s", "--signal", "-k", "--kill-after"}), 1),
    "taskset": (frozenset(), 1),
    "env": (frozenset({"-u", "--unset", "-C", "--chdir"}), 0),
    "stdbuf": (frozenset({"-i", "-o", "-e"}), 0),
    "ionice": (frozenset({"-c", "--class", "-n", "--classdata"}), 0),
    "chrt": (frozenset(), 1),
    "cpulimit": (frozenset({"-l", "--limit", "-p", "--pid", "-e", "--exe", "-c", "--cpu"}), 0),
    "sudo": (frozenset({"-u", "-g", "-h", "-p", "-C", "-D", "-U", "-r", "-t", "-T"}), 0),
    "doas": (frozenset({"-u", "-C"}), 0),
    "runuser": (frozenset({"-u", "-g", "-G"}), 0),
    "proxychains": (frozenset({"-f"}), 0),
    "proxychains4": (frozenset({"-f"}), 0),
    "torsocks": (frozenset({"-u", "-p", "-a", "-P"}), 0),
    "screen": (frozenset({"-S", "-c", "-e", "-h", "-p", "-t", "-T", "-Logfile"}), 0),
    "unbuffer": (frozenset(), 0),
    "flock": (frozenset({"-w", "--timeout", "-E", "--conflict-exit-code"}), 1),
    "exec": (frozenset({"-a"}), 0),
    "command": (frozenset(), 0),
    "builtin": (frozenset(), 0),
    "eval": (frozenset(), 0),
    "time": (frozenset({"-f", "--format", "-o", "--output"}), 0),
    "busybox": (frozenset(), 0),
    # sshpass -p PASS | -f FILE | -d FD | -e, then the ssh (scp, rsync...) command it feeds.
    "sshpass": (frozenset({"-p", "-f", "-d", "-P"}), 0),
}
SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ash", "ksh", "mksh", "rbash"})
MAX_DEPTH = 4  # nesting of wrappers, scripts and base64 layers followed
MAX_SCRIPT_CHARS = 65536
_ENV_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_SEPARATORS = frozenset({";", "&", "&&", "|", "||", "|&", "\n", "(", ")", ";;", "{", "}", "!"})
_REDIRECTIONS = frozenset({">", ">>", "<", "<<", "<<<", ">&", "<&", "&>", "&>>", ">|", "<>"})
_BASE64_HINT = re.compile(r"base64|b64decode|atob|openssl\s+enc", re.IGNORECASE)
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}")


@dataclass(frozen=True)
class Command:
    """One command that would run: its argv and how it was reached (`argv`, `sh -c`, `base64`)."""

    argv: tuple[str, ...]
    source: str
    wrappers: tuple[str, ...] = ()


@functools.lru_cache(maxsize=4096)  # several detectors ask for the same few names per exec
def program_name(arg0: str) -> str:
    """`/tmp/.x/XMRig.exe` -> `xmrig`: base name, lower case, without a Windows suffix."""
    name = arg0.rsplit("/", 1)[-1].lower()
    return name[:-4] if name.endswith(".exe") else name


def unwrap(argv: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Peel wrappers (`nohup`, `nice -n 5`, `screen -dmS s`, `env A=b`...) off an argv.

    Returns the inner argv and the wrappers' names, outermost first.
    """
    argv = tuple(argv)
    wrappers: list[str] = []
    while argv and len(wrappers) < 8:
        name = program_name(argv[0])
        if name not in WRAPPERS:
            break
        takes_value, positionals = WRAPPERS[name]
        index = 1
        while index < len(argv):
            token = argv[index]
            if token == "--":
                index += 1
                break
            if name == "env" and _ENV_ASSIGNMENT.match(token):
                index += 1
            elif token.startswith("-") and len(token) > 1:
                # `-dmS name`: a cluster of short flags whose last one takes the value.
                flag = token if token.startswith("--") else "-" + token[-1]
                index += 2 if (token in takes_value or flag in takes_value) and "=" not in token else 1
            elif positionals:
                positionals -= 1
                index += 1
            else:
                break
        wrappers.append(name)
        argv = argv[index:]
    return argv, tuple(wrappers)


def shell_script(argv: Sequence[str]) -> str | None:
    """The script of `sh -c SCRIPT` / `bash -lc SCRIPT` / `su -c SCRIPT`, else None."""
    if not argv:
        return None
    name = program_name(argv[0])
    if name == "su":
        for index, token in enumerate(argv[:-1]):
            if token in ("-c", "--command"):
                return argv[index + 1]
        return None
    if name not in SHELLS:
        return None
    has_c = False
    for token in argv[1:]:
        if token.startswith("-") and not token.startswith("--") and len(token) > 1:
            has_c = has_c or "c" in token[1:]
        elif token.startswith("--"):
            continue
        else:
            return token if has_c else None
    return None


def split_script(script: str) -> list[tuple[str, ...]]:
    """Simple commands of a shell script (`a; b && c | d`), redirections dropped."""
    script = script[:MAX_SCRIPT_CHARS]
    lexer = shlex.shlex(script, posix=True, punctuation_chars=";&|()<>\n")
    lexer.whitespace = " \t\r"
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        tokens = list(lexer)
    except ValueError:  # unbalanced quotes: fall back to words, still worth scoring
        tokens = script.split()
    commands: list[tuple[str, ...]] = []
    current: list[str] = []
    skip_next = False
    for token in tokens:
        if skip_next:
            skip_next = False
        elif token in _SEPARATORS or token.strip(";&|()\n") == "":
            if current:
                commands.append(tuple(current))
            current = []
        elif token in _REDIRECTIONS:
            skip_next = True
        else:
            current.append(token)
    if current:
        commands.append(tuple(current))
    return commands


def decoded_base64_scripts(text: str) -> list[str]:
    """Printable texts hidden as base64 in a command that decodes base64 (`base64 -d`...)."""
    if not _BASE64_HINT.search(text):
        return []
    scripts = []
    for run in _BASE64_RUN.findall(text[:MAX_SCRIPT_CHARS])[:8]:
        try:
            raw = base64.b64decode(run + "=" * (-len(run) % 4), validate=True)
            decoded = raw.decode("utf-8")
        except (binascii.Error, ValueError):
            continue
        printable = sum(ch.isprintable() or ch in "\n\t\r" for ch in decoded)
        if decoded and printable >= 0.95 * len(decoded):
            scripts.append(decoded)
    return scripts


def commands_of(argv: Sequence[str], source: str = "argv", depth: int = 0) -> Iterator[Command]:
    """Every command an exec would run: itself unwrapped, then those in its scripts and base64."""
    inner, wrappers = unwrap(argv)
    if inner:
        yield Command(argv=inner, source=source, wrappers=wrappers)
    if depth >= MAX_DEPTH:
        return
    script = shell_script(inner)
    if script is not None:
        yield from _script_commands(script, "sh -c", depth + 1)
    else:
        # Base64 handed straight to a program (`python -c "...b64decode('...')"`, `perl -e`).
        for decoded in decoded_base64_scripts(" ".join(inner)):
            yield from _script_commands(decoded, "base64", depth + 1)


def command_list(argv: Sequence[str]) -> tuple[Command, ...]:
    """All of `commands_of(argv)`, remembered for the last few argvs: the exec detectors
    (miner, tunnels, tuning) each take apart the same exec's command line."""
    return _command_list(tuple(argv))


@functools.lru_cache(maxsize=256)
def _command_list(argv: tuple[str, ...]) -> tuple[Command, ...]:
    return tuple(commands_of(argv))


def _script_commands(script: str, source: str, depth: int) -> Iterator[Command]:
    for command in split_script(script):
        yield from commands_of(command, source, depth)
    if depth < MAX_DEPTH:
        for decoded in decoded_base64_scripts(script):
            yield from _script_commands(decoded, "base64", depth + 1)
