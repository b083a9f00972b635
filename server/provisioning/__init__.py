"""Verification codes and code entry: minting, sealing, redemption, and the device-facing POST /provision."""
