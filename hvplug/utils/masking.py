"""Hide secrets before anything is logged or printed, where they are placed.

Secrets are masked by where they sit, never by searching all output for
their text: a password ``p`` must not turn ``type`` into ``ty***e``.

- structured data: :func:`mask_dict` masks the values of secret-looking
  keys (``auth_password``, ``chap_secret``, ...);
- command lines: :func:`mask_argv` masks the arguments that carry one;
- free text that hvplug did not write (a tool's stderr, an unexpected
  error): :func:`redact` masks a known secret only where it stands as a
  whole token, not inside a longer word.
"""

import re
from typing import Any

MASK = "***"
_SECRET_MARKERS = ("password", "secret", "passwd")


def _is_secret_key(key: str) -> bool:
    key = key.lower()
    # A secret's uuid or usage names the secret, and its XML never holds
    # the value: none of them is the secret itself.
    return (any(m in key for m in _SECRET_MARKERS)
            and not key.endswith(("uuid", "usage", "owned", "_xml")))


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


def _token(secret: str) -> re.Pattern:
    # Not preceded or followed by a letter, digit or underscore: a whole token.
    return re.compile(rf"(?<![\w]){re.escape(secret)}(?![\w])")


def redact(text: str, secrets: list[str]) -> str:
    """``text`` with each of ``secrets`` masked where it stands as a whole token.

    >>> redact("type: login as u with password p failed", ["p"])
    'type: login as u with password *** failed'
    """
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = _token(secret).sub(MASK, text)
    return text


def mask_argv(argv, secrets) -> list[str]:
    """``argv`` with every argument that carries one of ``secrets`` masked."""
    return [redact(arg, list(secrets)) if any(s and s in arg for s in secrets) else arg
            for arg in argv]
