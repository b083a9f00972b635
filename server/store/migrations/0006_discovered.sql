-- MACs seen on the network but not registered, saved by the server so the CLI can list them
-- and the list survives a restart.
CREATE TABLE discovered (
    mac           TEXT PRIMARY KEY,
    vendor_class  TEXT NOT NULL DEFAULT '',
    interface     TEXT NOT NULL DEFAULT '',
    source        TEXT NOT NULL,
    first_seen    REAL NOT NULL,
    last_seen     REAL NOT NULL,
    count         INTEGER NOT NULL
);
