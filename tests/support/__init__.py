"""Helpers shared by the integration and e2e tests: ports, waiting, processes."""
