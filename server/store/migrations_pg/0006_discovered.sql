-- MACs seen on the network but not registered, saved by the server so the CLI can list them
-- PostgreSQL edition of server/store/migrations/0006_discovered.sql (same number, same tables).
-- and the list survives a restart.
CREATE TABLE discovered (
    mac           TEXT COLLATE "C" PRIMARY KEY,
    vendor_class  TEXT COLLATE "C" NOT NULL DEFAULT '',
    interface     TEXT COLLATE "C" NOT NULL DEFAULT '',
    source        TEXT COLLATE "C" NOT NULL,
    first_seen    DOUBLE PRECISION NOT NULL,
    last_seen     DOUBLE PRECISION NOT NULL,
    count         INTEGER NOT NULL
);
