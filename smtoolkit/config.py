"""Settings from the environment (read here and nowhere else) and their validation."""

from __future__ import annotations

import getpass
import ipaddress
import math
import os
import re
from collections.abc import Callable
from urllib.parse import urlsplit

from .core.answers import safe_text
from .errors import ConfigError, MissingKeyError

DEFAULT_BASE_URL = "https://api.supermetrics.com/enterprise/v2"
API_KEY_ENV = "SUPERMETRICS_API_KEY"
BASE_URL_ENV = "SUPERMETRICS_BASE_URL"
# `smtoolkit panel`: the access token, and what the server tells each visitor's kernel (kernels
# inherit the server's environment; the API key itself never goes in a new variable).
PANEL_TOKEN_ENV = "SMTK_PANEL_TOKEN"
PANEL_AUDIT_ENV = "SMTK_PANEL_AUDIT"
PANEL_ASK_KEY_ENV = "SMTK_PANEL_ASK_KEY"
PANEL_ASK_REASON_ENV = "SMTK_PANEL_ASK_REASON"


def api_key_from(value: str | None) -> str:
    """The API key given, else $SUPERMETRICS_API_KEY; a clear error when there is none."""
    key = value if value is not None else os.environ.get(API_KEY_ENV)
    if key is None or not str(key).strip():
        raise MissingKeyError(
            f"no API key: pass api_key=... or set the environment variable {API_KEY_ENV}"
        )
    if not isinstance(key, str):
        raise ConfigError("api_key must be a string")
    key = key.strip()
    if any(ord(c) < 33 or ord(c) > 126 for c in key):
        raise ConfigError("api_key contains spaces or characters that cannot go in an HTTP header")
    return key


#: The operator on record when the OS does not say who is logged in.
UNKNOWN_OPERATOR = "unknown"


def operator_name() -> str:
    """The OS user name of whoever runs this (`getpass.getuser`, which reads $LOGNAME, $USER,
    $LNAME, $USERNAME, then the password database), or "unknown" when the OS does not say.
    Made encodable: a name from the environment may hold undecodable bytes."""
    try:
        name = getpass.getuser()
    except Exception:  # noqa: BLE001 - OSError (3.13+), KeyError/ImportError (older): no name known
        return UNKNOWN_OPERATOR
    name = safe_text(str(name).strip())[0] if isinstance(name, str) else ""
    return name or UNKNOWN_OPERATOR


def base_url_from_env(default: str = DEFAULT_BASE_URL) -> str:
    """$SUPERMETRICS_BASE_URL if set, else `default`."""
    return os.environ.get(BASE_URL_ENV) or default


def panel_token_from_env() -> str | None:
    """$SMTK_PANEL_TOKEN, or None when it is not set."""
    return os.environ.get(PANEL_TOKEN_ENV)


def export_panel_settings(*, base_url: str, audit: str, ask_key: bool, ask_reason: bool = False) -> None:
    """Settings of `smtoolkit panel` for the kernels it starts, which inherit this environment.

    With `ask_key`, the server's own API key is removed so that each visitor's typed key is the
    only one a kernel can use. The token is removed too: a kernel has no use for it.
    """
    os.environ[BASE_URL_ENV] = base_url
    os.environ[PANEL_AUDIT_ENV] = audit
    os.environ[PANEL_ASK_KEY_ENV] = "1" if ask_key else "0"
    os.environ[PANEL_ASK_REASON_ENV] = "1" if ask_reason else "0"
    os.environ.pop(PANEL_TOKEN_ENV, None)
    if ask_key:
        os.environ.pop(API_KEY_ENV, None)


def panel_settings() -> tuple[str, str | None, bool, bool]:
    """(base URL, audit file or None, ask_key, ask_reason) as `export_panel_settings` left them."""
    return (base_url_from_env(), os.environ.get(PANEL_AUDIT_ENV) or None,
            os.environ.get(PANEL_ASK_KEY_ENV) == "1", os.environ.get(PANEL_ASK_REASON_ENV) == "1")



def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    return len(host) <= 253 and all(_LABEL.fullmatch(label) for label in labels)


def origin_of(url: str) -> str:
    """scheme://host:port of a URL, lowercased, with the scheme's default port filled in."""
    parts = urlsplit(url)
    port = parts.port or {"https": 443, "http": 80}.get(parts.scheme.lower(), 0)
    return f"{parts.scheme.lower()}://{(parts.hostname or '').lower()}:{port}"


def check_base_url(url: object) -> str:
    """Validate a base URL: https anywhere, plain http only to loopback, no credentials."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"base_url must be a URL such as {DEFAULT_BASE_URL}")
    text = url.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"base_url is not a valid URL: {exc}") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(f"base_url must start with https:// and name a host, e.g. {DEFAULT_BASE_URL}")
    if not _valid_host(parts.hostname):
        raise ConfigError(f"base_url has an invalid host name {parts.hostname!r}: use letters, digits, '-' "
                          "and '.' (punycode for international names), or an IP address")
    if any(ord(c) < 33 or c == "\x7f" for c in text):
        raise ConfigError("base_url must not contain spaces or control characters")
    if parts.username or parts.password:
        raise ConfigError("base_url must not contain a user name or password; the key goes in api_key")
    if parts.query or parts.fragment:
        raise ConfigError("base_url must not contain '?' or '#'")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ConfigError(
            f"refusing plain http:// to {parts.hostname}: the API key would travel unencrypted. "
            "Use https://, or http:// only for a sandbox on 127.0.0.1/localhost."
        )
    del port
    return text.rstrip("/")


def check_setting(name: str, value: object, what: str, ok: Callable[[float], bool], whole: bool = False) -> None:
    """Raise a ConfigError naming the setting unless `value` is a fitting number."""
    good = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if good and whole:
        good = isinstance(value, int)
    if not good or not ok(float(value)):  # type: ignore[arg-type]
        raise ConfigError(f"{name} must be {what}, not {value!r}")
