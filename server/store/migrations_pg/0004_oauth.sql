-- Remote sign-in (RFC 8628): tenant user accounts, device authorization grants, refresh tokens.
-- PostgreSQL edition of server/store/migrations/0004_oauth.sql (same number, same tables).

-- The accounts devices are signed in as (e.g. room resource accounts). Usernames are unique
-- across tenants, like MACs and UPNs: the verification page finds the account by name alone.
CREATE TABLE tenant_users (
    username       TEXT COLLATE "C" PRIMARY KEY,              -- lowercased
    tenant_id      TEXT COLLATE "C" NOT NULL REFERENCES tenants(id) ON DELETE RESTRICT,
    display_name   TEXT COLLATE "C" NOT NULL DEFAULT '',
    password_hash  TEXT COLLATE "C" NOT NULL,                 -- argon2id, PHC string format
    disabled       INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    created_at     TEXT COLLATE "C" NOT NULL,
    updated_at     TEXT COLLATE "C" NOT NULL
);
CREATE INDEX tenant_users_by_tenant ON tenant_users (tenant_id, username);

-- One row per device authorization request. Once approved and redeemed it is the sign-in
-- session that the refresh tokens (and the `sid` claim of access tokens) belong to.
CREATE TABLE oauth_device_grants (
    id                TEXT COLLATE "C" PRIMARY KEY,             -- opaque, the `sid` claim of access tokens
    device_code_hash  BYTEA NOT NULL UNIQUE,         -- SHA-256 of the 256-bit device_code
    user_code_digest  BYTEA UNIQUE,                  -- HMAC-SHA256 under the code key, NULL once decided
    user_code_sealed  BYTEA,                         -- AES-256-GCM, shown by the admin sign-in call
    mac               TEXT COLLATE "C" NOT NULL REFERENCES devices(mac) ON DELETE CASCADE,
    tenant_id         TEXT COLLATE "C" NOT NULL,
    client_id         TEXT COLLATE "C" NOT NULL,
    scope             TEXT COLLATE "C" NOT NULL DEFAULT '',
    status            TEXT COLLATE "C" NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'issued', 'revoked')),
    username          TEXT COLLATE "C",
    created_at        TEXT COLLATE "C" NOT NULL,
    expires_at        TEXT COLLATE "C" NOT NULL,
    interval_s        INTEGER NOT NULL,             -- grows by 5 s with each slow_down
    last_poll_at      DOUBLE PRECISION,                         -- epoch seconds of the latest token request
    decided_at        TEXT COLLATE "C",
    revoked_at        TEXT COLLATE "C"
);
CREATE INDEX oauth_grants_by_mac ON oauth_device_grants (mac, status);
CREATE INDEX oauth_grants_by_user ON oauth_device_grants (username, status);

-- Refresh tokens, rotated on every use. A rotated token is kept (until the next rotation) so
-- that a replay is recognised and revokes the whole grant (RFC 9700 §4.14.2).
CREATE TABLE oauth_refresh_tokens (
    digest      BYTEA PRIMARY KEY,                   -- SHA-256 of the 256-bit token
    grant_id    TEXT COLLATE "C" NOT NULL REFERENCES oauth_device_grants(id) ON DELETE CASCADE,
    created_at  TEXT COLLATE "C" NOT NULL,
    expires_at  TEXT COLLATE "C" NOT NULL,
    rotated_at  TEXT COLLATE "C"
);
CREATE INDEX oauth_refresh_by_grant ON oauth_refresh_tokens (grant_id);
