"""Tenants and devices: the domain model, the registry service and its in-memory MAC index, CSV, discovered devices."""
