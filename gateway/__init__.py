"""The one public entry point: routes, limits and forwards requests to the services."""
