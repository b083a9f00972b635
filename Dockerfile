# Imprint server image. Run with host networking so DHCP (67/udp) and mDNS (5353/udp) see the
# site VLAN:  docker run --network host -v imprint-state:/var/lib/imprint imprint
FROM python:3.11-slim

WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY server ./server
COPY device_emulator ./device_emulator
# The server only: scapy (GPL-2.0-only, used by the emulator and tests) is not installed.
RUN pip install --no-cache-dir . && rm -rf /src

COPY configs/site-inform.toml /etc/imprint/imprint.toml
VOLUME ["/var/lib/imprint"]
EXPOSE 8443/tcp 67/udp 5353/udp
CMD ["imprint", "serve", "--config", "/etc/imprint/imprint.toml"]
