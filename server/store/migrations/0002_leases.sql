-- Full-mode DHCP leases, one row per address (the pool's latest state for it).
CREATE TABLE dhcp_leases (
    ip          TEXT PRIMARY KEY,
    mac         TEXT NOT NULL,
    client_id   BLOB,
    state       TEXT NOT NULL,
    expires_at  REAL NOT NULL,          -- epoch seconds
    subnet      TEXT NOT NULL,
    updated_at  REAL NOT NULL
);
CREATE INDEX dhcp_leases_by_mac ON dhcp_leases (mac);
