"""vagrant/Vagrantfile: Vagrant accepts it, and its provisioning scripts are sound shell."""

import os
import re
import subprocess
import textwrap

import yaml
from deploy_files import REPO

VAGRANTFILE = REPO / "vagrant" / "Vagrantfile"


def test_vagrant_validate_accepts_the_vagrantfile(tmp_path):
    # No hypervisor here, so provider settings are not checked; state goes to tmp_path.
    env = {**os.environ, "VAGRANT_HOME": str(tmp_path / "home"), "VAGRANT_DOTFILE_PATH": str(tmp_path / "dot")}
    done = subprocess.run(["vagrant", "validate", "--ignore-provider"], cwd=VAGRANTFILE.parent,
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0 and "validated successfully" in done.stdout, done.stdout + done.stderr


def provision_scripts() -> dict[str, str]:
    text = VAGRANTFILE.read_text()
    found = re.findall(r'provision "(\w+)", type: "shell", inline: <<~SHELL\n(.*?)\n\s*SHELL\n', text, re.S)
    return {name: textwrap.dedent(body) for name, body in found}


def test_provisioning_makes_the_system_install_starts_the_unit_and_prometheus():
    scripts = provision_scripts()
    assert set(scripts) == {"ebpfguard", "prometheus"}
    assert "make -C /usr/src/ebpfguard install" in scripts["ebpfguard"]
    assert "systemctl enable --now ebpfguard" in scripts["ebpfguard"]


def test_provisioning_scripts_parse_as_bash():
    for name, body in provision_scripts().items():
        done = subprocess.run(["bash", "-n"], input=body, capture_output=True, text=True)
        assert done.returncode == 0, f"{name}: {done.stderr}"


def test_prometheus_in_the_vm_scrapes_the_agents_default_metrics_address():
    body = provision_scripts()["prometheus"]
    config = yaml.safe_load(re.search(r"<<'YAML'\n(.*?)\nYAML\n", body, re.S).group(1))
    targets = [t for job in config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]]
    assert "127.0.0.1:9477" in targets
