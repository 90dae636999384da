"""Masking of secrets before anything reaches logs, MLflow params or tags: the one place
that knows what a secret in a URL or a message looks like.

Two shapes are masked, wherever they appear in a text:
  - a URL's userinfo password, `scheme://user:PASSWORD@host...`. Passwords are often
    written unencoded (a `/`, `:`, `@`, `?` or a space inside), so the userinfo runs to
    the *last* `@` of the URL (which ends at whitespace or a quote) before its query string
    (from the first `?name=`), or, for a password with whitespace, to the last `@` on the
    line; masking too much of a strange URL is the safe way to be wrong;
  - a `password=...`-like key (password, passwd, pwd, secret, token, api_key, access_key)
    in a query string or a libpq keyword string, up to `&`, whitespace or a quote.
"""

from __future__ import annotations

import re

MASK = "***"
_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<rest>[^\s'\"]*)")
_QUERY = re.compile(r"\?[A-Za-z_][A-Za-z0-9_.\-]*=")
_KEYED = re.compile(
    r"(?P<key>\b(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key)=)"
    r"(?P<value>[^&\s'\"]+)",
    re.IGNORECASE,
)


# A userinfo password with whitespace in it (the URL then looks like it ends early): from
# `scheme://user:` to the last `@` on the same line, when the span holds whitespace.
_SPACED = re.compile(
    r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s'\"]*:)(?P<pw>[^\n]*[^\S\n][^\n]*)@"
)
# The passwords of the URLs this process uses (`register_url`): a driver that parses a URL
# otherwise (an unencoded `@` in the password makes part of it "the host") quotes pieces
# of it in its own messages, which no URL pattern can see.
_KNOWN: set[str] = set()
MIN_KNOWN = 4  # shorter pieces would mask ordinary words


def register_url(url: str) -> None:
    """Remember `url`'s password, and its pieces between `@`s, for `mask_secrets`."""
    found = re.match(r"[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:(?P<pw>.*)@[^@]*$", url, re.S)
    if found is None:
        return
    password = found.group("pw")
    for piece in (password, *password.split("@")):
        if len(piece) >= MIN_KNOWN:
            _KNOWN.add(piece)
    _MASKED.clear()  # what was masked before may hold this password


# Texts already masked: a study masks the same few texts (task names, devices, option
# values) for every trial it logs. Bounded; emptied when a password becomes known.
_MASKED: dict[str, str] = {}
_MASKED_MAX = 4096


def mask_secrets(text: str) -> str:
    """`text` with every URL password and `password=`-like value replaced by ***."""
    masked = _MASKED.get(text)
    if masked is None:
        masked = _mask(text)
        if len(_MASKED) >= _MASKED_MAX:
            _MASKED.clear()
        _MASKED[text] = masked
    return masked


def _mask(text: str) -> str:
    for known in sorted(_KNOWN, key=len, reverse=True):
        text = text.replace(known, MASK)
    text = _SPACED.sub(lambda m: f"{m.group('head')}{MASK}@", text)
    return _KEYED.sub(lambda m: m.group("key") + MASK, _URL.sub(_mask_url, text))


def _mask_url(match: re.Match[str]) -> str:
    rest = match.group("rest")
    query = _QUERY.search(rest)
    at = rest.rfind("@", 0, query.start() if query else len(rest))
    user, colon, _password = rest[:at].partition(":") if at >= 0 else ("", "", "")
    if not colon:
        return match.group(0)  # no userinfo password
    return f"{match.group('scheme')}{user}:{MASK}{rest[at:]}"
