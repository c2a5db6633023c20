"""Engines: the Engine protocol, the lazy registry and one module per engine."""
