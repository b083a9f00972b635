-- Admin web UI: admin accounts (same roles as API tokens) and their server-side sessions.

-- An operator sees every tenant; an admin belongs to exactly one (the api_tokens rule).
CREATE TABLE admins (
    username       TEXT PRIMARY KEY,              -- lowercased
    password_hash  TEXT NOT NULL,                 -- argon2id, PHC string format
    role           TEXT NOT NULL CHECK (role IN ('operator', 'admin')),
    tenant_id      TEXT REFERENCES tenants(id) ON DELETE CASCADE,
    disabled       INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    CHECK ((role = 'operator' AND tenant_id IS NULL) OR (role = 'admin' AND tenant_id IS NOT NULL))
);

-- Server-side sessions, so logout, idle timeout and disabling an admin end a session at once.
-- The cookie carries 256 random bits; only their SHA-256 is stored.
CREATE TABLE admin_sessions (
    id_hash       BLOB PRIMARY KEY,
    username      TEXT NOT NULL REFERENCES admins(username) ON DELETE CASCADE,
    csrf_token    TEXT NOT NULL,                  -- synchroniser token for this session's forms
    created_at    TEXT NOT NULL,
    last_seen_at  TEXT NOT NULL,
    source        TEXT NOT NULL DEFAULT ''
);
CREATE INDEX admin_sessions_by_user ON admin_sessions (username);
CREATE INDEX admin_sessions_by_last_seen ON admin_sessions (last_seen_at);
