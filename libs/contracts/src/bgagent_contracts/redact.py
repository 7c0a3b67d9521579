"""Secret redaction: known token shapes, credential contexts and exact configured values.

Every rule replaces what it finds with ``[REDACTED-<KIND>]``. Rules run in a fixed order:

1. exact values given by the caller (``extra_secrets``: the runner's GitHub token and model key);
2. PEM private key blocks, to the END line or, when cut, to the end of the text;
3. provider token shapes (GitHub, Anthropic, OpenAI, Slack, npm, GitLab, Stripe, Google, Hugging Face,
   PyPI, SendGrid, Docker Hub, DigitalOcean, bgagent's own ``bga_`` API tokens), JWTs, and AWS
   access key ids with a 40-character secret access key next to them;
4. credential contexts, whatever the secret looks like: ``Authorization:`` headers of any scheme,
   ``Bearer``/``Basic`` credentials, ``curl -u user:pass`` and ``--password x`` flags, URL userinfo
   (all of it, up to the last ``@`` before the host), and ``*_TOKEN`` / ``*_KEY`` / ``*_SECRET`` /
   ``PASSWORD`` assignments in shell, ``.env``, YAML, JSON and code form. Values that are code
   (``settings.token``, ``get_token()``, ``token = next_token``), placeholders (``$TOKEN``,
   ``<token>``, ``{token}``) or type names (``token: str``) are left alone.

Why a hand list and not the ``detect-secrets`` package: importing its plugins pulls in ``requests``
(and with it urllib3, ssl, http.client), its patterns are built for scanning source files line by
line (several need a quoted value, a fixed length or a keyword on the same line), and it misses
formats we need (``github_pat_``, ``sk-ant-``, ``xapp-``, ``sk_test_``, bare AWS secrets,
any-scheme ``Authorization`` headers, passwords containing ``@``, truncated PEM blocks). Its
denylists were a reference for the GitLab, Slack and SendGrid shapes.

Speed: patterns are precompiled and start with a literal where possible (the regex engine then skips
ahead), repetitions followed by something they cannot match are possessive or bounded, a rule whose
trigger word is absent does not run, and case-insensitive keywords are found in a lowercased copy.
No input makes a rule backtrack quadratically (``test_redact.py`` times 1 MB adversarial strings).
"""

from __future__ import annotations

import base64
import binascii
import re
import string
from collections.abc import Callable

__all__ = ["MIN_EXACT_SECRET", "REDACTED_PREFIX", "redact"]

REDACTED_PREFIX = "[REDACTED-"
MIN_EXACT_SECRET = 4
"""Exact secrets shorter than this are not redacted (they would redact ordinary words)."""


def _marker(kind: str) -> str:
    return f"{REDACTED_PREFIX}{kind}]"


_ONLY_MARKER = re.compile(r"\[REDACTED-[A-Z0-9_]+\]")
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_A = "A-Za-z0-9"

# --- shapes --------------------------------------------------------------------------------------

_PEM = re.compile(
    r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
    r"[\s\S]*?(?:-----END[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----|\Z)"
)

# No word boundary before the distinctive prefixes: a token glued to an identifier (``TOKEN_ghp_…``,
# ``ghp_…_old``) must not leak. Short generic prefixes (``sk-``, ``hf_``, ``eyJ``) must start a word;
# their lookbehind comes after the literal so that the engine can search for the literal first.
_TOKENS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("GITHUB_TOKEN", re.compile(rf"gh[pousr]_[{_A}]{{20,}}+|github_pat_[{_A}_]{{20,}}+")),
    ("ANTHROPIC_KEY", re.compile(rf"sk-ant-[{_A}_-]{{10,}}+")),
    ("OPENAI_KEY", re.compile(rf"sk-(?<![{_A}_-]sk-)[{_A}_-]{{20,}}+")),
    (
        "SLACK_WEBHOOK",
        re.compile(rf"https://hooks\.slack(?:-gov)?\.com/(?:services|workflows|triggers)/[{_A}_/-]++"),
    ),
    ("SLACK_TOKEN", re.compile(rf"(?:xox[abposre]|xapp)-[{_A}-]{{10,}}+")),
    ("NPM_TOKEN", re.compile(rf"npm_[{_A}]{{20,}}+")),
    (
        "GITLAB_TOKEN",
        re.compile(
            r"gl(?:pat|dt|ft|soat|rt|rtr|cbt|ptt|imt|agent|oas|ffct|wt)"
            rf"-[{_A}_.-]{{20,}}+|GR1348941[{_A}_-]{{20,}}+"
        ),
    ),
    ("STRIPE_KEY", re.compile(rf"[sr]k_(?:live|test)_[{_A}]{{10,}}+|whsec_[{_A}]{{20,}}+")),
    ("GOOGLE_API_KEY", re.compile(rf"AIza[{_A}_-]{{35}}")),
    ("HUGGINGFACE_TOKEN", re.compile(rf"hf_(?<![{_A}_]hf_)[{_A}]{{30,}}+")),
    ("PYPI_TOKEN", re.compile(rf"pypi-AgE[{_A}_-]{{50,}}+")),
    ("SENDGRID_KEY", re.compile(rf"SG\.[{_A}_-]{{22}}\.[{_A}_-]{{43}}")),
    ("DOCKER_TOKEN", re.compile(rf"dckr_pat_[{_A}_-]{{20,}}+")),
    ("DIGITALOCEAN_TOKEN", re.compile(r"do[opr]_v1_[a-f0-9]{64}")),
    # bgagent's own managed API tokens (``bgagent_contracts.auth.new_token``): bga_ + 49 characters.
    ("BGAGENT_TOKEN", re.compile(rf"bga_[{_A}_-]{{40,}}+")),
    # Three (JWS) to five (JWE) base64url segments; the header is JSON, so it starts with "eyJ".
    ("JWT", re.compile(rf"eyJ(?<![{_A}_-]eyJ)[{_A}_-]++\.[{_A}_-]++(?:\.[{_A}_-]*+){{1,3}}")),
)

# AWS: an access key id, and a 40-character secret access key right before or after it.
_AWS_ID = re.compile(r"(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])(?<![A-Z0-9]....)[A-Z0-9]{16}(?![A-Z0-9])")
_AWS_SEP = "[^A-Za-z0-9/+]{1,12}"
_AWS_AFTER = re.compile(rf"{_AWS_SEP}([A-Za-z0-9/+]{{40}})(?![A-Za-z0-9/+=])")
_AWS_BEFORE = re.compile(rf"(?<![A-Za-z0-9/+])([A-Za-z0-9/+]{{40}}){_AWS_SEP}\Z")
_AWS_LABELLED = re.compile(
    r"(secret[ _-]?access[ _-]?key[^\n:=]{0,20}[:=][ \t]*[\"']?)([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])",
    re.IGNORECASE,
)

# --- contexts ------------------------------------------------------------------------------------

_LITERALS = frozenset(
    (
        *("true", "false", "none", "null", "nil", "undefined", "required"),
        *("str", "bytes", "int", "bool", "float", "dict", "list", "optional", "any", "secretstr"),
        *("self", "cls", "lambda", "not", "and", "or", "if", "else", "is", "in"),
    )
)
_REFERENCE = re.compile(r"""\$|\{\{|%\(|<[^>\s]*>?\Z|\*{3}|\.\.\.|…|\[REDACTED-|\{[A-Za-z_][\w.]*\}\Z""")
_CODE = re.compile(r"[A-Za-z_]\w*+(?:(?:\.[A-Za-z_]\w*+)++|\s*+[(\[])")


def _is_reference(value: str) -> bool:
    """A placeholder, variable reference, type name, masked value or marker rather than a secret."""
    return not value or value.lower() in _LITERALS or _REFERENCE.match(value) is not None


def _is_code(value: str) -> bool:
    """``settings.api_key``, ``get_token()``, ``os.environ[…]``: an expression, not a literal."""
    return _CODE.match(value) is not None


# Authorization headers: everything after the scheme, to the closing quote or the end of the line. A
# quote right before the header name (``-H "Authorization: …"``) ends the header; it is found by a
# lookbehind after the literal so that the engine can search for the literal first. No match for
# code (``authorization: str``, ``authorization=header``) or placeholders (``Bearer {token}``): the
# credential must not start with a short plain word or ``$ < { * [ ...``.
_AUTH_HEADER = re.compile(
    r"""\b(?:proxy-)?authorization"""
    r"""(?>(?<=(?P<pre>["'`])authorization)|(?<=(?P<pre2>["'`])proxy-authorization)|)"""
    r"""(?>["'`]?\]?[ \t]*+(?::|=>|=)[ \t]*+(?:[rbfu]{1,2}(?=["']))?(?P<open>["'`])?)"""
    r"""(?>(?P<scheme>[a-z][a-z0-9._-]*+[ \t]++)?)"""
    r"""(?(scheme)(?=[a-z0-9_+/])(?!\.\.\.)|(?![a-z_]{1,15}+(?![a-z0-9_])|[$<{*\[]|\.\.\.))"""
    r"""(?P<cred>(?(open)(?:\\.|(?!(?P=open))[^\\\r\n])++"""
    r"""|(?(pre)(?:(?!(?P=pre))[^\r\n])++|(?(pre2)(?:(?!(?P=pre2))[^\r\n])++|[^\r\n]++))))""",
    re.IGNORECASE,
)
_CLOSERS = " \t,;)}]"

_NOT_A_TOKEN = (
    r"(?!(?:tokens?|auth|authentication|authorization|header|scheme|credentials?|the|a|an|is|"
    r"and|or|of|in|to|for|from|with|as|on|only|string|value|prefix|format)\b)"
)
_BEARER = re.compile(rf"\bbearer[ \t]++{_NOT_A_TOKEN}[A-Za-z0-9._~+/-]++=*+", re.IGNORECASE)
_BASIC = re.compile(r"\bbasic[ \t]++([A-Za-z0-9+/]{6,}+={0,2})(?![A-Za-z0-9+/=])", re.IGNORECASE)
_CLI = re.compile(
    r"""-(?<![\w-]-)(?:(?:u|-user)(?:[ \t]++|=)"""
    r"""(?:(?P<q>["'])(?P<quoted>[^"'\r\n:]++:[^"'\r\n]*+)(?P=q)|(?P<userpass>[^\s"':]++:[^\s"']*+))"""
    r"""|-(?:password|passwd|token|api-key|secret|client-secret)[ \t]++(?P<value>[^\s-]\S*+))"""
)
_UID_GID = re.compile(r"\d+(?::\d*)?\Z")

# URL userinfo: from "://" to the LAST "@" before the host (passwords may contain "@" and ":").
_URL_USERINFO = re.compile(r"""://((?:[^\s/@"'<>`]*+@)++)""")

# Assignments: a name ending in one of these words, a separator, a value. Matched in a lowercase
# copy of the text (same positions), so the engine can search for the keywords case-sensitively.
_ASSIGNMENT = re.compile(
    r"""(?P<kw>token|secret|passw(?:or)?d|passphrase|pwd|credentials?|key)"""
    r"""(?P<sep>["'`]?\]?[ \t]*+(?::=|=>|=(?!=)|:(?!:))[ \t]*+)"""
    r"""(?:(?P<prefix>[rbfu]{1,2}(?=["'`]))?(?P<q>["'`])(?P<quoted>(?:\\.|(?!(?P=q))[^\\\r\n])*+)(?P=q)"""
    r"""|(?P<bare>[^\s"'`,;&]++))"""
)
_NAME_CHARS = string.ascii_letters + string.digits + "_.-"
_MAX_NAME = 64
_KEY_COMPOUNDS = ("api", "access", "secret", "private", "auth", "client", "signing", "encryption", "master")
_AWS_SECRET_NAME = re.compile(r"secret[_.-]?access[_.-]?key", re.IGNORECASE)


# --- rules ---------------------------------------------------------------------------------------

_Span = tuple[int, int, str]


def _splice(text: str, spans: list[_Span]) -> str:
    """Replace non-overlapping ``(start, end, kind)`` spans with markers (earlier spans win)."""
    if not spans:
        return text
    out: list[str] = []
    last = 0
    for start, end, kind in sorted(spans):
        if start < last:
            continue
        out.append(text[last:start])
        out.append(_marker(kind))
        last = end
    out.append(text[last:])
    return "".join(out)


def _aws(text: str) -> str:
    spans: list[_Span] = []
    for m in _AWS_ID.finditer(text):
        spans.append((m.start(), m.end(), "AWS_ACCESS_KEY"))
        after = _AWS_AFTER.match(text, m.end())
        if after is not None:
            spans.append((after.start(1), after.end(1), "AWS_SECRET_KEY"))
        before = _AWS_BEFORE.search(text, max(0, m.start() - 52), m.start())
        if before is not None:
            spans.append((before.start(1), before.end(1), "AWS_SECRET_KEY"))
    return _splice(text, spans)


def _aws_labelled(m: re.Match[str]) -> str:
    return m.group(1) + _marker("AWS_SECRET_KEY")


def _auth_header(m: re.Match[str]) -> str:
    cred = m.group("cred")
    quoted = m.group("open") or m.group("pre") or m.group("pre2")
    secret = cred if quoted else cred.rstrip(_CLOSERS)
    if not secret.strip():
        return m.group(0)
    return m.group(0)[: m.start("cred") - m.start()] + _marker("AUTH_HEADER") + cred[len(secret) :]


def _basic(m: re.Match[str]) -> str:
    """``Basic <base64>`` outside a header: redacted when it decodes to ``user:password``."""
    token = m.group(1)
    try:
        decoded = base64.b64decode(token + "=" * (-len(token) % 4), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return m.group(0)
    if ":" not in decoded or not decoded.isprintable():
        return m.group(0)
    return m.group(0)[: m.start(1) - m.start()] + _marker("BASIC_AUTH")


def _cli(m: re.Match[str]) -> str:
    group = next(g for g in ("quoted", "userpass", "value") if m.group(g) is not None)
    value = m.group(group)
    if group != "value" and (_UID_GID.match(value) or _is_reference(value.partition(":")[2])):
        return m.group(0)  # ``docker run -u 1000:1000``, ``-u user:$PASS``
    if group == "value" and _is_reference(value):
        return m.group(0)  # ``--token $TOKEN``
    whole, offset = m.group(0), m.start()
    return whole[: m.start(group) - offset] + _marker("CREDENTIALS") + whole[m.end(group) - offset :]


def _url_userinfo(m: re.Match[str]) -> str:
    userinfo = m.group(1)[:-1]
    if _ONLY_MARKER.fullmatch(userinfo):
        return m.group(0)
    if ":" in userinfo or (len(userinfo) >= 16 and any(c.isdigit() for c in userinfo)):
        return "://" + _marker("URL_CREDENTIALS") + "@"
    return m.group(0)  # ``ssh://git@host``: a user name, no secret


def _secret_name(name: str, keyword: str) -> bool:
    """Any ``*token``, ``*secret``, ``*password``; ``key`` only as ``*_key`` or ``apiKey``-like."""
    if keyword != "key":
        return True
    if len(name) == len(keyword):
        return False  # ``key = …`` alone is a dictionary key, a sort key, …
    return name[-4] in "_.-" or name[:-3].lower().endswith(_KEY_COMPOUNDS)


def _assignments(text: str) -> str:
    return _splice(text, _assignment_spans(text, _lowercase(text)))


def _assignment_spans(text: str, lower: str) -> list[_Span]:
    spans: list[_Span] = []
    search = _ASSIGNMENT.search
    pos = 0
    while (m := search(lower, pos)) is not None:
        keyword, prefix, quoted = m.group("kw", "prefix", "quoted")
        group = "bare" if quoted is None else "quoted"
        start, end = m.span(group)
        kw_start, kw_end = m.span("kw")
        window = text[max(0, kw_start - _MAX_NAME) : kw_end]
        name = window[len(window[: kw_start - kw_end].rstrip(_NAME_CHARS)) :]
        if _secret_name(name, keyword) and _secret_value(name, text[start:end], quoted is not None, prefix):
            aws = "access" in name.lower() and _AWS_SECRET_NAME.search(name) is not None
            spans.append((start, end, "AWS_SECRET_KEY" if aws else "SECRET_VALUE"))
            pos = m.end()
        else:
            pos = kw_end  # the value may hold an assignment of its own
    return spans


def _secret_value(name: str, value: str, quoted: bool, prefix: str | None) -> bool:
    if quoted:
        if prefix and "f" in prefix and "{" in value:
            return False  # an f-string: interpolated code
        return not _is_reference(value)
    if not name.isupper() and value.replace("_", "").isalpha():
        return False  # ``token = next_token`` in code is a variable; ``PASSWORD=hunter`` is a secret
    if value.isdigit() and len(value) < 6:
        return False  # ``max_token = 100``
    return not (_is_reference(value) or _is_code(value))  # ``token = get_token()``


class _Rule:
    """One redaction pass, skipped when none of its trigger strings occurs in the text."""

    def __init__(
        self,
        apply: Callable[[str], str],
        *,
        triggers: tuple[str, ...] = (),
        lower_triggers: tuple[str, ...] = (),
    ) -> None:
        self.apply = apply
        self.triggers = triggers
        self.lower_triggers = lower_triggers

    def wanted(self, text: str, lower: str) -> bool:
        if not self.triggers and not self.lower_triggers:
            return True
        return any(t in text for t in self.triggers) or any(t in lower for t in self.lower_triggers)


def _sub(pattern: re.Pattern[str], replacement: str | Callable[[re.Match[str]], str]) -> Callable[[str], str]:
    def apply(text: str) -> str:
        return pattern.sub(replacement, text)

    return apply


_RULES: tuple[_Rule, ...] = (
    _Rule(_sub(_PEM, _marker("PRIVATE_KEY")), triggers=("-----BEGIN",)),
    *(_Rule(_sub(pattern, _marker(kind))) for kind, pattern in _TOKENS),
    _Rule(_sub(_AWS_LABELLED, _aws_labelled), lower_triggers=("access",)),
    _Rule(_aws, triggers=("AKIA", "ASIA", "ABIA", "ACCA", "A3T")),
    _Rule(_sub(_AUTH_HEADER, _auth_header), lower_triggers=("authorization",)),
    _Rule(_sub(_BEARER, _marker("BEARER")), lower_triggers=("bearer",)),
    _Rule(_sub(_BASIC, _basic), lower_triggers=("basic",)),
    _Rule(_sub(_CLI, _cli), triggers=("-u", "--")),
    _Rule(_sub(_URL_USERINFO, _url_userinfo), triggers=("@",)),
    _Rule(
        _assignments, lower_triggers=("token", "secret", "passw", "passphrase", "pwd", "credential", "key")
    ),
)


def _lowercase(text: str) -> str:
    """A lowercase copy with the same length, so that positions carry over to ``text``.

    ``str.lower`` keeps the length of everything but U+0130 (İ becomes i + a combining dot).
    """
    lower = text.replace("\u0130", "i").lower()
    return lower if len(lower) == len(text) else text.translate(_ASCII_LOWER)


def redact(text: str, extra_secrets: tuple[str, ...] = ()) -> str:
    """Replace known secret shapes, secrets in credential contexts, and any exact secret given."""
    exact = sorted((s for s in extra_secrets if len(s) >= MIN_EXACT_SECRET), key=len, reverse=True)
    for secret in exact:
        text = text.replace(secret, _marker("SECRET"))
    # Triggers are looked up in the text as given: a rule only ever adds markers, and markers need no
    # redaction, so a trigger that appears later on can only come from a marker.
    lower = _lowercase(text)
    for rule in _RULES:
        if rule.wanted(text, lower):
            text = rule.apply(text)
    return text
