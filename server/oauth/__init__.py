"""Remote sign-in (RFC 8628): tenant users, device authorization, tokens, and the /device verification page."""
