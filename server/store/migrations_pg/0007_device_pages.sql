-- Device list pages in MAC order within a tenant: a page after a MAC cursor is an index seek,
-- PostgreSQL edition of server/store/migrations/0007_device_pages.sql (same number, same tables).
-- however deep, and a tenant's first page no longer sorts all of its devices.
CREATE INDEX devices_by_tenant_mac ON devices (tenant_id, mac);
