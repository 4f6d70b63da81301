# syntax=docker/dockerfile:1
# failoverd in a container. The systemd unit (systemd/failoverd.service) is the primary
# deployment; this image is for hosts that run everything in containers.
#
#   docker build -t failoverd .
#   docker run -d --name failoverd \
#     -v /etc/failoverd:/etc/failoverd:ro -v failoverd-state:/var/lib/failoverd \
#     -e OVH_APPLICATION_KEY -e OVH_APPLICATION_SECRET -e OVH_CONSUMER_KEY \
#     -p 127.0.0.1:9877:9877 failoverd
#
# In the container the policy must listen beyond loopback (daemon.listen: 0.0.0.0:9877)
# for Prometheus to scrape it; publish the port to a trusted address only.

# ---- build: one wheel for failoverd and one per dependency, no compiler in the runtime
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY failoverd ./failoverd
RUN pip wheel --wheel-dir /wheels .

# ---- runtime
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# A fixed UID/GID so that a bind-mounted /etc/failoverd can be made readable to it.
RUN groupadd --system --gid 10001 failoverd \
 && useradd --system --uid 10001 --gid failoverd --home-dir /var/lib/failoverd \
      --shell /usr/sbin/nologin failoverd \
 && install -d -o failoverd -g failoverd -m 0750 /var/lib/failoverd \
 && install -d -m 0755 /etc/failoverd
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links=/wheels failoverd && rm -rf /wheels

USER failoverd:failoverd
WORKDIR /var/lib/failoverd
# Policy (and admin token, ovh.conf) in, journal and lock out: both outlive the container.
VOLUME ["/etc/failoverd", "/var/lib/failoverd"]
# daemon.listen's default port: /metrics, /healthz, /status, /history and the admin API.
EXPOSE 9877
# No curl in the slim image: the standard library does it. Non-200 or no answer → exit 1.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request as u; sys.exit(u.urlopen('http://127.0.0.1:9877/healthz', timeout=4).status != 200)"]
# ICMP checks use unprivileged ICMP sockets, which Docker allows by default
# (net.ipv4.ping_group_range); otherwise run with --cap-add NET_RAW.
STOPSIGNAL SIGTERM
ENTRYPOINT ["failoverd"]
CMD ["run", "-c", "/etc/failoverd/failoverd.yaml"]
