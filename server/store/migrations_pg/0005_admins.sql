-- Admin web UI: admin accounts (same roles as API tokens) and their server-side sessions.
-- PostgreSQL edition of server/store/migrations/0005_admins.sql (same number, same tables).

-- An operator sees every tenant; an admin belongs to exactly one (the api_tokens rule).
CREATE TABLE admins (
    username       TEXT COLLATE "C" PRIMARY KEY,              -- lowercased
    password_hash  TEXT COLLATE "C" NOT NULL,                 -- argon2id, PHC string format
    role           TEXT COLLATE "C" NOT NULL CHECK (role IN ('operator', 'admin')),
    tenant_id      TEXT COLLATE "C" REFERENCES tenants(id) ON DELETE CASCADE,
    disabled       INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    created_at     TEXT COLLATE "C" NOT NULL,
    updated_at     TEXT COLLATE "C" NOT NULL,
    CHECK ((role = 'operator' AND tenant_id IS NULL) OR (role = 'admin' AND tenant_id IS NOT NULL))
);

-- Server-side sessions, so logout, idle timeout and disabling an admin end a session at once.
-- The cookie carries 256 random bits; only their SHA-256 is stored.
CREATE TABLE admin_sessions (
    id_hash       BYTEA PRIMARY KEY,
    username      TEXT COLLATE "C" NOT NULL REFERENCES admins(username) ON DELETE CASCADE,
    csrf_token    TEXT COLLATE "C" NOT NULL,                  -- synchroniser token for this session's forms
    created_at    TEXT COLLATE "C" NOT NULL,
    last_seen_at  TEXT COLLATE "C" NOT NULL,
    source        TEXT COLLATE "C" NOT NULL DEFAULT ''
);
CREATE INDEX admin_sessions_by_user ON admin_sessions (username);
CREATE INDEX admin_sessions_by_last_seen ON admin_sessions (last_seen_at);
