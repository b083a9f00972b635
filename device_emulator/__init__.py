"""Imprint device emulator: an independent DHCP/mDNS peer that imports nothing from server/."""
