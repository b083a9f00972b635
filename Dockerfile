# Imprint server image: python:3.11-slim, no compilers (every dependency ships wheels), the
# server only, run as the non-root user `imprint`.
#
#   docker build -t imprint .
#   docker run -d --name imprint --network host \
#     --cap-drop ALL --cap-add NET_BIND_SERVICE --cap-add NET_RAW \
#     -v imprint-state:/var/lib/imprint -v /etc/imprint/imprint.toml:/etc/imprint/imprint.toml:ro \
#     imprint
#
# --network host is required: DHCP (67/udp) and mDNS (5353/udp) must see the site VLAN's
# broadcasts and multicast, which never reach a bridged container. configs/docker-compose.yml
# is the same as a compose file; README "Running in a site VLAN" explains the rest.
# tests/integration/ops/test_docker_install_steps.py runs these steps in a clean virtualenv.
FROM python:3.11-slim

WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY server ./server
COPY device_emulator ./device_emulator
# The server only: scapy (GPL-2.0-only, used by the emulator and tests) is not installed.
RUN pip install --no-cache-dir . && rm -rf /src

# Non-root, yet allowed to bind UDP 67 and HTTPS 443 and to open AF_PACKET sockets (mDNS reads
# each query as a frame to learn the querier's MAC; full mode's probe for another DHCP server):
# Docker gives a non-root user no ambient capabilities, so the two go on the
# interpreter as file capabilities (what `setcap cap_net_bind_service,cap_net_raw+ep` writes:
# struct vfs_cap_data revision 2, effective, permitted bits 10 and 13). They take effect only
# while the container's bounding set holds them (keep the two --cap-add above) and not under
# --security-opt no-new-privileges.
RUN python -c "import os, struct, sys; os.setxattr(os.path.realpath(sys.executable), 'security.capability', struct.pack('<5I', 0x02000001, 1 << 10 | 1 << 13, 0, 0, 0))"

RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/imprint --no-create-home \
      --shell /usr/sbin/nologin imprint \
 && install -d -o imprint -g imprint -m 0750 /var/lib/imprint
COPY configs/site-inform.toml /etc/imprint/imprint.toml

ENV PYTHONUNBUFFERED=1 \
    IMPRINT_HEALTH_URL=https://127.0.0.1:443/healthz
USER imprint
WORKDIR /var/lib/imprint
VOLUME ["/var/lib/imprint"]
EXPOSE 443/tcp 67/udp 5353/udp

# Liveness through the server's own /healthz. The certificate is checked by the devices that pin
# its fingerprint, not by this local probe (it is self-signed by default). Change
# IMPRINT_HEALTH_URL with [http] port or [tls] enabled.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, ssl, urllib.request as r; r.urlopen(os.environ['IMPRINT_HEALTH_URL'], context=ssl._create_unverified_context(), timeout=4)"]

# SIGTERM: in-flight requests finish, mDNS goodbyes are sent, the store is closed. SIGHUP
# (docker kill -s HUP imprint) reloads profiles, [log], [codes] limits and [provision] rates.
STOPSIGNAL SIGTERM
CMD ["imprint", "serve", "--config", "/etc/imprint/imprint.toml"]
