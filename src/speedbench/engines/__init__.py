"""Engines: the Engine protocol with its defaults (base.py), the lazy registry (registry.py), building and starting
one (build.py), the shared OpenAI-compatible streaming client (openai_http.py) and one module per engine."""
