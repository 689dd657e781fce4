"""The local profile's infrastructure: Docker engine, registry, base images."""
