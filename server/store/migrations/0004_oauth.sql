-- Remote sign-in (RFC 8628): tenant user accounts, device authorization grants, refresh tokens.

-- The accounts devices are signed in as (e.g. room resource accounts). Usernames are unique
-- across tenants, like MACs and UPNs: the verification page finds the account by name alone.
CREATE TABLE tenant_users (
    username       TEXT PRIMARY KEY,              -- lowercased
    tenant_id      TEXT NOT NULL REFERENCES tenants(id) ON DELETE RESTRICT,
    display_name   TEXT NOT NULL DEFAULT '',
    password_hash  TEXT NOT NULL,                 -- argon2id, PHC string format
    disabled       INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
CREATE INDEX tenant_users_by_tenant ON tenant_users (tenant_id, username);

-- One row per device authorization request. Once approved and redeemed it is the sign-in
-- session that the refresh tokens (and the `sid` claim of access tokens) belong to.
CREATE TABLE oauth_device_grants (
    id                TEXT PRIMARY KEY,             -- opaque, the `sid` claim of access tokens
    device_code_hash  BLOB NOT NULL UNIQUE,         -- SHA-256 of the 256-bit device_code
    user_code_digest  BLOB UNIQUE,                  -- HMAC-SHA256 under the code key, NULL once decided
    user_code_sealed  BLOB,                         -- AES-256-GCM, shown by the admin sign-in call
    mac               TEXT NOT NULL REFERENCES devices(mac) ON DELETE CASCADE,
    tenant_id         TEXT NOT NULL,
    client_id         TEXT NOT NULL,
    scope             TEXT NOT NULL DEFAULT '',
    status            TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'issued', 'revoked')),
    username          TEXT,
    created_at        TEXT NOT NULL,
    expires_at        TEXT NOT NULL,
    interval_s        INTEGER NOT NULL,             -- grows by 5 s with each slow_down
    last_poll_at      REAL,                         -- epoch seconds of the latest token request
    decided_at        TEXT,
    revoked_at        TEXT
);
CREATE INDEX oauth_grants_by_mac ON oauth_device_grants (mac, status);
CREATE INDEX oauth_grants_by_user ON oauth_device_grants (username, status);

-- Refresh tokens, rotated on every use. A rotated token is kept (until the next rotation) so
-- that a replay is recognised and revokes the whole grant (RFC 9700 §4.14.2).
CREATE TABLE oauth_refresh_tokens (
    digest      BLOB PRIMARY KEY,                   -- SHA-256 of the 256-bit token
    grant_id    TEXT NOT NULL REFERENCES oauth_device_grants(id) ON DELETE CASCADE,
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    rotated_at  TEXT
);
CREATE INDEX oauth_refresh_by_grant ON oauth_refresh_tokens (grant_id);
