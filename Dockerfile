# The ebpfguard agent as a container image (deploy/kubernetes/daemonset.yaml runs it).
# Not built in CI: the project's CI machine has no container engine.
#   docker build -t ebpfguard:0.1.0 .
# bcc compiles the probes at start-up against the node's kernel headers, which the DaemonSet
# mounts from the host (/lib/modules, /usr/src); the image carries none.
FROM debian:bookworm-slim

# python3-bpfcc is bcc with its LLVM; the venv sees it through --system-site-packages,
# exactly as scripts/setup.sh sets up a host.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-bpfcc \
 && rm -rf /var/lib/apt/lists/*

COPY pyproject.toml README.md /src/
COPY ebpfguard /src/ebpfguard
COPY bpf /src/bpf
# Editable: the package finds its probe sources in ../bpf, beside it in /src.
RUN python3 -m venv --system-site-packages /opt/ebpfguard \
 && /opt/ebpfguard/bin/pip install --no-cache-dir -e /src \
 && ln -s /opt/ebpfguard/bin/ebpfguard /usr/local/bin/ebpfguard

ENTRYPOINT ["ebpfguard"]
CMD ["run"]
