-- Provisioning: the device's OAuth client credential (hashed) and where it was redeemed from.
-- PostgreSQL edition of server/store/migrations/0003_provisioning.sql (same number, same tables).
ALTER TABLE devices ADD COLUMN client_secret_hash BYTEA;
ALTER TABLE devices ADD COLUMN provisioned_at TEXT COLLATE "C";
ALTER TABLE devices ADD COLUMN provisioned_from TEXT COLLATE "C";
