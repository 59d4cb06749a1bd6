"""What every part shares: settings, logging, health/metrics server, backoff, lifecycle."""
