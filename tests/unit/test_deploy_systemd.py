"""The systemd unit: systemd accepts it, it grants what the agent checks for, and no more."""

import re
import subprocess
from pathlib import Path

from deploy_files import REPO, UNIT, unit_capabilities, unit_settings

from ebpfguard.kernel.capabilities import REQUIRED


INSTALL_PREFIX = "/opt/ebpfguard/"


def installed_unit(tmp_path: Path) -> Path:
    """The unit as scripts/install.sh writes it for PREFIX=tmp_path, with the executable there
    (verify checks that ExecStart exists; the real install is tests/install's)."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "ebpfguard").write_text("#!/bin/sh\n")
    (tmp_path / "bin" / "ebpfguard").chmod(0o755)
    unit = tmp_path / "ebpfguard.service"
    unit.write_text(UNIT.read_text().replace(INSTALL_PREFIX, f"{tmp_path}/"))
    return unit


def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    done = subprocess.run(["systemd-analyze", "verify", str(installed_unit(tmp_path))],
                          capture_output=True, text=True)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def test_the_unit_runs_the_system_install_not_a_clone():
    command = unit_settings()["ExecStart"][0].split()[0]
    assert command == INSTALL_PREFIX + "bin/ebpfguard"


def test_the_unit_grants_exactly_the_capabilities_the_agent_requires():
    settings = unit_settings()
    assert sorted(unit_capabilities()) == sorted(REQUIRED)
    assert sorted(" ".join(settings["AmbientCapabilities"]).split()) == sorted(REQUIRED)


def test_the_unit_restarts_on_failure_but_not_on_a_configuration_error():
    settings = unit_settings()
    assert settings["Restart"] == ["on-failure"]
    assert settings["RestartPreventExitStatus"] == ["2"]


def test_events_go_to_the_rotated_file_and_logs_to_the_journal():
    settings = unit_settings()
    assert "--output /var/log/ebpfguard/events.jsonl" in settings["ExecStart"][0]
    assert "StandardError" not in settings  # the journal, systemd's default
    assert "/var/log/ebpfguard/events.jsonl" in (REPO / "deploy" / "logrotate" / "ebpfguard").read_text()


def test_offline_security_review_rates_the_unit_ok_or_better():
    done = subprocess.run(["systemd-analyze", "security", "--offline=true", str(UNIT)],
                          capture_output=True, text=True)
    level = re.search(r"Overall exposure level for \S+: ([0-9.]+)", done.stdout)
    assert level, done.stdout + done.stderr
    # 5.0 is the bound of systemd's "OK" band; the unit rates 4.7 with the agent's capabilities.
    assert float(level.group(1)) <= 5.0


def test_logrotate_accepts_the_snippet():
    done = subprocess.run(["logrotate", "--debug", str(REPO / "deploy" / "logrotate" / "ebpfguard")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_stalled_agent_is_restarted_by_the_watchdog():
    settings = unit_settings()
    assert settings["Type"] == ["notify"] and settings["NotifyAccess"] == ["main"]
    assert settings["WatchdogSec"] == ["30s"]
