-- Registry: tenants, devices, verification codes, API tokens, audit log.
CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

CREATE TABLE devices (
    mac             TEXT PRIMARY KEY,            -- normalised aa:bb:cc:dd:ee:ff
    device_id       TEXT NOT NULL UNIQUE,        -- opaque id, the device's OAuth client_id
    tenant_id       TEXT NOT NULL REFERENCES tenants(id) ON DELETE RESTRICT,
    location        TEXT NOT NULL DEFAULT '',
    state           TEXT NOT NULL CHECK (state IN ('awaiting_activation', 'awaiting_sign_in', 'signed_in')),
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    signed_in_user  TEXT
);
CREATE INDEX devices_by_tenant_state ON devices (tenant_id, state, mac);

-- One current code per device. No plaintext: `digest` is HMAC-SHA256 under a key kept outside
-- the database, `sealed` is AES-256-GCM under another key from the same file (for display/export).
CREATE TABLE codes (
    mac              TEXT PRIMARY KEY REFERENCES devices(mac) ON DELETE CASCADE,
    digest           BLOB NOT NULL,
    sealed           BLOB NOT NULL,
    created_at       TEXT NOT NULL,
    expires_at       TEXT NOT NULL,
    used_at          TEXT,
    failed_attempts  INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE api_tokens (
    id          TEXT PRIMARY KEY,
    digest      BLOB NOT NULL UNIQUE,            -- SHA-256 of the (high-entropy) token
    role        TEXT NOT NULL CHECK (role IN ('operator', 'admin')),
    tenant_id   TEXT REFERENCES tenants(id) ON DELETE CASCADE,
    name        TEXT NOT NULL DEFAULT '',
    created_at  TEXT NOT NULL,
    revoked_at  TEXT,
    CHECK ((role = 'operator' AND tenant_id IS NULL) OR (role = 'admin' AND tenant_id IS NOT NULL))
);

CREATE TABLE audit (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         TEXT NOT NULL,
    actor      TEXT NOT NULL,
    tenant_id  TEXT,
    action     TEXT NOT NULL,
    target     TEXT,
    before     TEXT,                              -- JSON, never a code
    after      TEXT
);
CREATE INDEX audit_by_tenant ON audit (tenant_id, id);

-- Every device write appends the MAC here in the same transaction, so a server process keeps
-- its in-memory index in step with changes made by other processes (the CLI).
CREATE TABLE registry_changes (
    seq  INTEGER PRIMARY KEY AUTOINCREMENT,
    mac  TEXT NOT NULL
);
