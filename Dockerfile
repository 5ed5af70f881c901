# The ebpfguard agent as a container image (deploy/kubernetes/daemonset.yaml runs it).
# Not built in CI: the project's CI machine has no container engine.
#   docker build -t ebpfguard:0.1.0 .
# bcc compiles the probes at start-up against the node's kernel headers, which the DaemonSet
# mounts from the host (/lib/modules, /usr/src); the image carries none.

# Stage 1: the wheel (the package with its probes, rules and default config; no source tree).
FROM debian:bookworm-slim AS wheel
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-pip python3-setuptools python3-wheel \
 && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md LICENSE /src/
COPY ebpfguard /src/ebpfguard
COPY bpf /src/bpf
RUN pip wheel --no-deps --no-build-isolation --no-cache-dir -w /dist /src

# Stage 2: the agent, installed from that wheel as `make install` does on a host.
FROM debian:bookworm-slim
# python3-bpfcc is bcc with its LLVM; the venv sees it through --system-site-packages.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-bpfcc \
 && rm -rf /var/lib/apt/lists/*
COPY --from=wheel /dist/ /tmp/dist/
RUN python3 -m venv --system-site-packages /opt/ebpfguard \
 && /opt/ebpfguard/bin/pip install --no-cache-dir /tmp/dist/ebpfguard-*.whl \
 && rm -rf /tmp/dist \
 && ln -s /opt/ebpfguard/bin/ebpfguard /usr/local/bin/ebpfguard

ENTRYPOINT ["ebpfguard"]
CMD ["run"]
