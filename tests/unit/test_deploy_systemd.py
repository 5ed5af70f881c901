"""The systemd unit: systemd accepts it, it grants what the agent checks for, and no more."""

import re
import subprocess

from deploy_files import REPO, UNIT, unit_capabilities, unit_settings

from ebpfguard.kernel.capabilities import REQUIRED


def test_systemd_analyze_verify_accepts_the_unit():
    done = subprocess.run(["systemd-analyze", "verify", str(UNIT)], capture_output=True, text=True)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


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
