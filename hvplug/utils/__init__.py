"""Small helpers shared across hvplug."""
