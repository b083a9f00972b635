-- Full-mode DHCP leases, one row per address (the pool's latest state for it).
-- PostgreSQL edition of server/store/migrations/0002_leases.sql (same number, same tables).
CREATE TABLE dhcp_leases (
    ip          TEXT COLLATE "C" PRIMARY KEY,
    mac         TEXT COLLATE "C" NOT NULL,
    client_id   BYTEA,
    state       TEXT COLLATE "C" NOT NULL,
    expires_at  DOUBLE PRECISION NOT NULL,          -- epoch seconds
    subnet      TEXT COLLATE "C" NOT NULL,
    updated_at  DOUBLE PRECISION NOT NULL
);
CREATE INDEX dhcp_leases_by_mac ON dhcp_leases (mac);
