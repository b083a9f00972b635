-- Provisioning: the device's OAuth client credential (hashed) and where it was redeemed from.
ALTER TABLE devices ADD COLUMN client_secret_hash BLOB;
ALTER TABLE devices ADD COLUMN provisioned_at TEXT;
ALTER TABLE devices ADD COLUMN provisioned_from TEXT;
