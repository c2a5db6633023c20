"""Secrets: ``redact`` (values of secret-looking keys, and the ``user:password@`` of every URL), ``redact_urls``
(userinfo -> ``***@`` in any text) and ``Secrets`` (the run's secret values, scrubbed from whatever is written or
printed: the API key, ``-E api_token``, URL passwords; ``engine_secrets`` collects them from a spec)."""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from speedbench.config.run import EngineSpec

SECRET_MARKERS = ("key", "token", "secret", "password", "authorization")
REDACTED = "***"
# a URL's userinfo: everything between "scheme://" and the last "@" before the host (RFC 3986 wants "@" in a
# password percent-encoded; a raw one is taken as aiohttp and urllib take it, up to the last "@")
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^\s/?#'\"<>]*@")
# shorter values are not searched for in text: too common to be secrets ("EMPTY", "none"), and replacing them
# everywhere would corrupt what is written; URLs' userinfo and secret-looking fields are redacted whatever their length
MIN_SECRET_LEN = 6


def redact_urls(text: str) -> str:
    """Every URL's userinfo in ``text`` -> ``***@``: ``http://user:pw@host/v1`` -> ``http://***@host/v1``."""
    return _URL_USERINFO.sub(rf"\g<scheme>{REDACTED}@", text)


def url_password(url: str | None) -> str | None:
    """The password of a ``scheme://user:password@host`` URL (None without one, or for an unparsable URL)."""
    if not url:
        return None
    try:
        return urlsplit(url).password or None
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return None


def url_secrets(url: str | None) -> list[str]:
    """What a URL's ``user:password@`` lets out: the password, and the basic-auth token aiohttp sends for it
    (a server may echo the Authorization header)."""
    password = url_password(url)
    if password is None or url is None:
        return []
    user = unquote(urlsplit(url).username or "")
    token = base64.b64encode(f"{user}:{unquote(password)}".encode("latin-1", "replace")).decode("ascii")
    return [password, token]


def has_userinfo(url: str) -> bool:
    """Whether a URL carries ``user[:password]@`` (aiohttp then sends it as basic auth)."""
    try:
        return "@" in urlsplit(url).netloc
    except ValueError:
        return False


@dataclass(frozen=True)
class Secrets:
    """A run's secret values (API key, URL passwords): ``scrub`` replaces each by ``***`` in a text and redacts
    URLs' userinfo.  Build with ``Secrets.of(...)`` (drops empty, short and already redacted values)."""

    values: tuple[str, ...] = ()

    @classmethod
    def of(cls, *values: str | None) -> Secrets:
        keep = {v for raw in values if raw for v in (raw, unquote(raw)) if len(v) >= MIN_SECRET_LEN and v != REDACTED}
        return cls(tuple(sorted(keep, key=lambda v: (-len(v), v))))  # longest first: a secret inside another

    def __or__(self, other: Secrets) -> Secrets:
        return Secrets.of(*self.values, *other.values)

    def scrub(self, text: str) -> str:
        text = redact_urls(text)
        for v in self.values:
            if v in text:
                text = text.replace(v, REDACTED)
        return text

    def scrub_obj(self, obj: Any) -> Any:
        """``scrub`` over every string in a JSON-like value (dict keys included)."""
        if isinstance(obj, str):
            return self.scrub(obj)
        if isinstance(obj, dict):
            return {self.scrub_obj(k): self.scrub_obj(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [self.scrub_obj(v) for v in obj]
        return obj


def engine_secrets(spec: EngineSpec, environ: Mapping[str, str]) -> Secrets:
    """The secret values an engine spec brings: the API key (``$api_key_env``, ``-E api_token``) and the
    passwords in ``base_url`` / ``metrics_url`` (and their basic-auth tokens)."""
    return Secrets.of(
        environ.get(spec.api_key_env),
        spec.options.get("api_token"),
        *url_secrets(spec.base_url),
        *url_secrets(spec.metrics_url),
    )


def redact(obj: Any) -> Any:
    """Replace values of secret-looking keys by '***' and URLs' userinfo by '***@' (recursively)."""
    if isinstance(obj, dict):
        return {
            k: (
                REDACTED
                if isinstance(k, str)
                and any(m in k.lower() for m in SECRET_MARKERS)
                and not k.endswith("_env")
                and isinstance(v, str)
                and v
                else redact(v)
            )
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    if isinstance(obj, str):
        return redact_urls(obj)
    return obj
