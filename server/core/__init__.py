"""Small pure pieces every capability shares: MACs, the LAN policy, rate limits, metrics, logs, TLS."""
