"""The REST API (/api/v1) for IT admins and automation, described by its generated OpenAPI document."""
