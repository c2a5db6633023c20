"""Typed configuration, declared once: ``RunConfig`` / ``EngineSpec`` / ``DatasetSpec`` (config/run.py), each
command-line setting's ``Flag`` on its field (config/flags.py), and the run's secrets (config/secrets.py)."""

from speedbench.config.flags import Flag, Setting
from speedbench.config.run import (
    BODY_PREFIX,
    DatasetSpec,
    EngineSpec,
    RunConfig,
    parse_engine_options,
    parse_procs,
    parse_ray,
)
from speedbench.config.secrets import (
    MIN_SECRET_LEN,
    REDACTED,
    SECRET_MARKERS,
    Secrets,
    engine_secrets,
    has_userinfo,
    redact,
    redact_urls,
    url_password,
    url_secrets,
)

__all__ = [
    "BODY_PREFIX", "MIN_SECRET_LEN", "REDACTED", "SECRET_MARKERS", "DatasetSpec", "EngineSpec", "Flag", "RunConfig",
    "Secrets", "Setting", "engine_secrets", "has_userinfo", "parse_engine_options", "parse_procs", "parse_ray",
    "redact", "redact_urls", "url_password", "url_secrets",
]  # fmt: skip
