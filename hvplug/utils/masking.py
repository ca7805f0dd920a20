"""Hide secrets before anything is logged or printed."""

from typing import Any

MASK = "***"
_SECRET_MARKERS = ("password", "secret", "passwd")


def _is_secret_key(key: str) -> bool:
    key = key.lower()
    # A secret's uuid names the secret; it is not the secret itself.
    return any(m in key for m in _SECRET_MARKERS) and not key.endswith("uuid")


def mask_dict(value: Any) -> Any:
    """Return a deep copy of ``value`` with every secret-looking key masked.

    >>> mask_dict({"data": {"auth_password": "p", "auth_username": "u"}})
    {'data': {'auth_password': '***', 'auth_username': 'u'}}
    """
    if isinstance(value, dict):
        return {
            k: (MASK if isinstance(k, str) and _is_secret_key(k) and v is not None
                else mask_dict(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [mask_dict(v) for v in value]
    return value


def redact(text: str, secrets: list[str]) -> str:
    """``text`` with every occurrence of each of ``secrets`` masked."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text
