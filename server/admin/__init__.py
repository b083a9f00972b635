"""The admin web UI (/ui): admin accounts, sessions, CSRF, and the pages."""
