"""Find the `RemoteForward` lines an ssh command will take from its configuration files.

Best effort, as the agent sees the files (through a reader it is given, inside the process's
own root), bounded, and honest about what it could not read:

* `-F file` replaces both default files (`-F none`: no files at all); otherwise the user's
  `~/.ssh/config` (home from the passwd entry of the process's uid, as ssh takes it) and
  `/etc/ssh/ssh_config`;
* lines before any `Host`/`Match` apply to every host; a `Host` block applies when its patterns
  match the host named on the command line (`*`, `?`, `!negation`, case-insensitive);
* `Match` blocks are not evaluated (their criteria may run commands or need state we do not
  have): their lines are skipped and counted in the result;
* `Include` is followed up to the depth OpenSSH allows, relative names resolved as ssh does;
  glob patterns cannot be expanded without listing directories and are reported instead.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Callable, Optional

from ebpfguard.globs import glob_match
from ebpfguard.detect.ssh_command import (
    RemoteForwardSpec, SshCommand, is_yes, remote_forward_from_config, split_config_line,
)

# (path) -> the file's bytes, or None if it cannot be read.
ReadFile = Callable[[str], Optional[bytes]]

SYSTEM_CONFIG = "/etc/ssh/ssh_config"
SYSTEM_DIR = "/etc/ssh"
MAX_INCLUDE_DEPTH = 16  # readconf.c READCONF_MAX_DEPTH
MAX_FILES = 32


@dataclass
class ConfigRead:
    """The forwards found in config files, and what was read or not on the way."""

    forwards: list[RemoteForwardSpec] = field(default_factory=list)
    read: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    unresolved_includes: list[str] = field(default_factory=list)
    skipped_match_blocks: int = 0
    clear_all_forwardings: Optional[bool] = None

    def as_evidence(self) -> dict:
        return {"read": self.read, "unreadable": self.unreadable,
                "unresolved_includes": self.unresolved_includes,
                "skipped_match_blocks": self.skipped_match_blocks}


def host_matches(patterns: list[str], host: str) -> bool:
    """OpenSSH's match_pattern_list: any negated match rejects, else any positive match."""
    host = host.lower()
    matched = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        # The config is the sandbox's: a linear-time glob, never a backtracking regex.
        if glob_match(pattern.lstrip("!"), host, casefold=True, classes=False):
            if negated:
                return False
            matched = True
    return matched


def home_directory(passwd: Optional[bytes], uid: Optional[int]) -> Optional[str]:
    """The home directory of `uid` in an /etc/passwd text, if it is listed."""
    if passwd is None or uid is None:
        return None
    for line in passwd.decode("utf-8", "replace").splitlines():
        fields = line.split(":")
        if len(fields) >= 6 and fields[2] == str(uid):
            return fields[5]
    return None


class _ConfigWalker:
    def __init__(self, read_file: ReadFile, host: str, home: Optional[str]) -> None:
        self.read_file = read_file
        self.host = host
        self.home = home
        self.result = ConfigRead()

    def expand(self, path: str, relative_to: Optional[str]) -> Optional[str]:
        """`~/x` in the home directory, relative names in `relative_to`; None if unknown."""
        if path.startswith("~/") or path == "~":
            return posixpath.join(self.home, path[2:]) if self.home else None
        if path.startswith("/"):
            return path
        return posixpath.join(relative_to, path) if relative_to else None

    def walk(self, path: str, relative_to: Optional[str], depth: int) -> None:
        if len(self.result.read) + len(self.result.unreadable) >= MAX_FILES:
            self.result.unreadable.append(f"{path} (file limit)")
            return
        data = self.read_file(path)
        if data is None:
            self.result.unreadable.append(path)
            return
        self.result.read.append(path)
        active = True
        for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            keyword, args = split_config_line(line)
            if not keyword or keyword.startswith("#"):
                continue
            if keyword == "host":
                active = host_matches(args, self.host)
            elif keyword == "match":
                active = False
                self.result.skipped_match_blocks += 1
            elif not active:
                continue
            elif keyword == "include":
                self.include(args, relative_to, depth)
            elif keyword == "remoteforward":
                spec = remote_forward_from_config(args, f"{path}:{number}")
                if spec:
                    self.result.forwards.append(spec)
            elif keyword == "clearallforwardings" and self.result.clear_all_forwardings is None:
                self.result.clear_all_forwardings = is_yes(args)

    def include(self, names: list[str], relative_to: Optional[str], depth: int) -> None:
        for name in names:
            path = self.expand(name, relative_to)
            if path is None or any(c in name for c in "*?["):
                self.result.unresolved_includes.append(name)
            elif depth + 1 > MAX_INCLUDE_DEPTH:
                self.result.unresolved_includes.append(f"{name} (depth limit)")
            else:
                self.walk(path, relative_to, depth + 1)


def read_remote_forwards(command: SshCommand, read_file: ReadFile,
                         home: Optional[str]) -> ConfigRead:
    """The RemoteForward lines the configuration gives `command`'s destination host."""
    walker = _ConfigWalker(read_file, command.host or "", home)
    user_dir = posixpath.join(home, ".ssh") if home else None
    if command.config_file is not None:
        if command.config_file != "none":
            # -F names a file relative to the working directory, which the reader resolves;
            # Includes inside it are relative to ~/.ssh like any user configuration.
            config_file = command.config_file
            path = config_file if not config_file.startswith("~") else walker.expand(
                config_file, None)
            if path is None:
                walker.result.unreadable.append(config_file)
            else:
                walker.walk(path, user_dir, 0)
        return walker.result
    if user_dir:
        walker.walk(posixpath.join(user_dir, "config"), user_dir, 0)
    else:
        walker.result.unreadable.append("~/.ssh/config (home unknown)")
    walker.walk(SYSTEM_CONFIG, SYSTEM_DIR, 0)
    return walker.result
