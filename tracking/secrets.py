"""Masking of secrets before anything reaches logs, MLflow params or tags: the one place
that knows what a secret in a URL or a message looks like.

Secrets are masked by their position in a text, never by their value: a study, a path or
a parameter that happens to spell a password (`postgres-bench` with the password
`postgres`) is left as it is. The positions:
  - a URL's userinfo password, `scheme://user:PASSWORD@host...`. Passwords are often
    written unencoded (a `/`, `:`, `@`, `?` or a space inside), so the userinfo runs to
    the *last* `@` of the URL (which ends at whitespace or a quote) before its query string
    (from the first `?name=`), or, for a password with whitespace, to the last `@` on the
    line; masking too much of a strange URL is the safe way to be wrong;
  - a `password=...`-like key (password, passwd, pwd, secret, token, api_key, access_key)
    in a query string or a libpq keyword string, up to `&`, whitespace or a quote;
  - the host a driver names after splitting a password with an unencoded `@` at its first
    `@` (`scheme://u:hunter@2024@db` → host `2024@db`): the rest of the password of a URL
    this process uses (`register_url`) where it stands as that host's userinfo, at the
    start of a word and right before an `@`.
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
# What follows the first `@` of the passwords of the URLs this process uses: a driver
# takes it for the start of the host and quotes it in its own messages.
_TAILS: set[str] = set()
_tail_pattern: re.Pattern[str] | None = None


def register_url(url: str) -> None:
    """Remember what a driver may take for the host in `url`'s password, for `mask_secrets`."""
    global _tail_pattern
    found = re.match(r"[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:(?P<pw>.*)@[^@]*$", url, re.S)
    if found is None or "@" not in found.group("pw"):
        return
    _TAILS.add(found.group("pw").split("@", 1)[1])
    alternatives = "|".join(re.escape(t) for t in sorted(_TAILS, key=len, reverse=True))
    _tail_pattern = re.compile(rf"(?<![\w.\-])(?:{alternatives})(?=@)")
    _MASKED.clear()  # what was masked before may hold such a host


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
    if _tail_pattern is not None:
        text = _tail_pattern.sub(MASK, text)
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
