"""Package data (kept a regular package so importlib.resources hands out real paths)."""
