"""GA4GH Passports: which visas of a passport hold, and the dataset grants they give.

A passport (the ``ga4gh_passport_v1`` claim) is a list of visas, each a JWT signed by its visa
issuer. A visa counts only if its issuer is in ``auth.passports.trusted_issuers``, its signature
verifies against that issuer's keys, it has not expired and its ``asserted`` time is not in the
future; the others are ignored (and logged). Each ``ControlledAccessGrants`` visa that counts
grants its ``value``, the dataset id, until its ``exp``.

A visa may carry ``conditions`` (GA4GH Passport v1.2, "conditions"): a list of alternatives
(OR), each a list of condition clauses (AND). A clause names a visa ``type`` and matches some of
the visa's string claims (``value``, ``source``, ``by``), each as ``const:<text>`` (equal),
``pattern:<pattern>`` (``?`` is one character, ``*`` any run of them, nothing else is special)
or ``split_pattern:<pattern>`` (the pattern matches one of the ``;``-separated parts). A
conditional visa counts only if every clause of one alternative is met by some other visa of
the passport that counts and has no conditions itself (the spec's rule against chains of
conditions), and whose visa identity (``sub``, ``iss``) is the conditional visa's own or is
linked to it by ``LinkedIdentities`` visas that count. Everything fails closed: a clause naming
another claim, or a matching method the spec does not define, is not met; conditions that break
the spec's format (not a list of non-empty lists of clauses, a clause without ``type`` or
with nothing to match, a clause on ``asserted`` or ``conditions``, a value without its
``<method>:`` prefix) make the node ignore the visa.
"""

from __future__ import annotations

import heapq
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import jwt

from .settings import PassportSettings
from .tokens import InvalidToken, KeySource, KeysUnavailable, verify_jwt

__all__ = [
    "Clause",
    "MalformedConditions",
    "Passports",
    "Visa",
    "dataset_grants",
    "parse_conditions",
    "pattern_matches",
]

log = logging.getLogger(__name__)

VISA_CLAIM = "ga4gh_visa_v1"
GRANT_TYPE = "ControlledAccessGrants"
LINK_TYPE = "LinkedIdentities"
MAX_VISAS = 200
# The visa object's claims a condition clause may match: the string-valued ones of the spec.
MATCHABLE = frozenset({"value", "source", "by"})
# Claims the spec forbids in a clause (a timestamp; a condition on a condition).
FORBIDDEN = frozenset({"asserted", "conditions"})
_ASSERTED_SKEW = 300.0

Identity = tuple[str, str]
"""A visa identity: the visa's (``sub``, ``iss``)."""


class MalformedConditions(ValueError):
    """A visa's ``conditions`` do not have the form the spec gives them."""


def pattern_matches(pattern: str, text: str) -> bool:
    """Whether ``pattern`` matches all of ``text``, case-sensitively: ``?`` matches one
    character, ``*`` any run of characters (even none), every other character itself. There is
    no escape; unlike :mod:`fnmatch`, ``[`` is an ordinary character."""
    p = t = 0
    star = -1  # where the last '*' was in the pattern
    resume = 0  # the text position that '*' is currently made to stop at
    while t < len(text):
        if p < len(pattern) and pattern[p] == "*":
            star, resume = p, t
            p += 1
        elif p < len(pattern) and pattern[p] in ("?", text[t]):
            p += 1
            t += 1
        elif star >= 0:  # let the last '*' take one more character and try again
            resume += 1
            p, t = star + 1, resume
        else:
            return False
    while p < len(pattern) and pattern[p] == "*":
        p += 1
    return p == len(pattern)


@dataclass(frozen=True)
class Clause:
    """One condition clause: a visa type and (claim, method, operand) tests, all to be met by
    the same visa."""

    type: str
    tests: tuple[tuple[str, str, str], ...]
    unsupported: str | None = None
    """Why no visa can meet this clause (a claim or method the spec does not define)."""

    def matches(self, visa: Visa) -> bool:
        if self.unsupported is not None or visa.type != self.type:
            return False
        for claim, method, operand in self.tests:
            actual = visa.body.get(claim)
            if not isinstance(actual, str):
                return False  # an absent claim matches nothing (an absent `by` is "unknown")
            if method == "const":
                ok = actual == operand
            elif method == "pattern":
                ok = pattern_matches(operand, actual)
            else:  # split_pattern
                ok = any(pattern_matches(operand, part) for part in actual.split(";"))
            if not ok:
                return False
        return True


def parse_conditions(raw: object) -> list[list[Clause]]:
    """The alternatives of a visa's ``conditions``; :class:`MalformedConditions` if they break
    the spec's format."""
    if not isinstance(raw, list) or not raw:
        raise MalformedConditions("conditions must be a non-empty list of lists of clauses")
    alternatives: list[list[Clause]] = []
    for alternative in raw:
        # An empty alternative would be met by nothing at all: malformed, not "always true".
        if not isinstance(alternative, list) or not alternative:
            raise MalformedConditions("each alternative of conditions must be a non-empty list")
        alternatives.append([_clause(item) for item in alternative])
    return alternatives


def _clause(raw: object) -> Clause:
    if not isinstance(raw, dict):
        raise MalformedConditions("a condition clause must be an object")
    kind = raw.get("type")
    if not isinstance(kind, str) or not kind:
        raise MalformedConditions("a condition clause needs a 'type'")
    if len(raw) < 2:
        raise MalformedConditions("a condition clause must match at least one claim besides type")
    tests: list[tuple[str, str, str]] = []
    unsupported: str | None = None
    for claim, value in raw.items():
        if claim == "type":
            continue
        if claim in FORBIDDEN:
            raise MalformedConditions(f"a condition clause must not match {claim!r}")
        if not isinstance(value, str) or ":" not in value:
            raise MalformedConditions(f"condition {claim!r} must be a '<method>:<value>' string")
        method, _, operand = value.partition(":")
        if claim not in MATCHABLE:
            unsupported = unsupported or f"it matches the claim {claim!r}, unknown here"
        elif method not in ("const", "pattern", "split_pattern"):
            unsupported = unsupported or f"it matches {claim!r} by {method!r}, unknown here"
        tests.append((claim, method, operand))
    return Clause(kind, tuple(tests), unsupported)


@dataclass(frozen=True)
class Visa:
    """A visa that verified: signed by a trusted issuer, not expired."""

    issuer: str
    subject: str | None
    expires: float
    body: Mapping[str, Any]
    """The ``ga4gh_visa_v1`` object."""

    @property
    def type(self) -> object:
        return self.body.get("type")

    @property
    def identity(self) -> Identity | None:
        """(``sub``, ``iss``); None without a ``sub``: such a visa is linked to no other."""
        return (self.subject, self.issuer) if self.subject is not None else None

    @property
    def conditional(self) -> bool:
        return self.body.get("conditions") is not None


def _links(visas: Iterable[Visa]) -> dict[Identity, dict[Identity, float]]:
    """Visa identities linked by LinkedIdentities visas, with when each link expires."""
    links: dict[Identity, dict[Identity, float]] = {}
    for visa in visas:
        value = visa.body.get("value")
        if visa.type != LINK_TYPE or visa.identity is None or not isinstance(value, str):
            continue
        own = visa.identity
        for entry in value.split(";"):
            sub, comma, iss = entry.partition(",")
            if not comma or not sub or not iss or "," in iss:
                log.info("ignored a malformed LinkedIdentities entry of %s", visa.issuer)
                continue
            other: Identity = (unquote(sub), unquote(iss))
            for a, b in ((own, other), (other, own)):
                known = links.setdefault(a, {})
                known[b] = max(known.get(b, -math.inf), visa.expires)
    return links


def _linked(
    start: Identity | None, links: Mapping[Identity, Mapping[Identity, float]]
) -> dict[Identity, float]:
    """Identity -> until when it is linked to ``start`` (the latest-lasting chain of links; a
    chain lasts as long as its shortest-lived link). ``start`` itself: forever."""
    if start is None:
        return {}
    until: dict[Identity, float] = {start: math.inf}
    heap: list[tuple[float, Identity]] = [(-math.inf, start)]
    while heap:
        negated, identity = heapq.heappop(heap)
        if -negated < until[identity]:
            continue
        for other, expires in links.get(identity, {}).items():
            chain = min(-negated, expires)
            if chain > until.get(other, -math.inf):
                until[other] = chain
                heapq.heappush(heap, (-chain, other))
    return until


def _met_until(
    conditions: Sequence[Sequence[Clause]],
    candidates: Sequence[Visa],
    linked: Mapping[Identity, float],
) -> float | None:
    """Until when ``conditions`` are met by ``candidates`` (None: they are not)."""
    best: float | None = None
    for alternative in conditions:
        until = math.inf
        for clause in alternative:
            if clause.unsupported is not None:
                log.info(
                    "a condition clause on %s visas is never met: %s",
                    clause.type,
                    clause.unsupported,
                )
                until = -math.inf
                break
            meeting = [
                min(v.expires, linked[v.identity])
                for v in candidates
                if v.identity is not None and v.identity in linked and clause.matches(v)
            ]
            if not meeting:
                until = -math.inf
                break
            until = min(until, max(meeting))  # any one visa meeting the clause will do
        if until > -math.inf:
            best = until if best is None else max(best, until)
    return best


def dataset_grants(visas: Iterable[Visa]) -> dict[str, float | None]:
    """Dataset id -> when its grant expires, from the ControlledAccessGrants among ``visas``
    (visas that verified), their conditions evaluated against the others."""
    held = list(visas)
    unconditional = [v for v in held if not v.conditional]
    links = _links(unconditional)
    grants: dict[str, float | None] = {}
    for visa in held:
        dataset = visa.body.get("value")
        if visa.type != GRANT_TYPE or not isinstance(dataset, str) or not dataset:
            continue
        expires = visa.expires
        if visa.conditional:
            try:
                conditions = parse_conditions(visa.body.get("conditions"))
            except MalformedConditions as exc:
                log.info("ignored a grant of %s by %s: %s", dataset, visa.issuer, exc)
                continue
            met = _met_until(conditions, unconditional, _linked(visa.identity, links))
            if met is None:
                log.info(
                    "ignored a grant of %s by %s: its conditions are not met", dataset, visa.issuer
                )
                continue
            # A conditional visa holds only while its conditions do: once the visas meeting them
            # expire, nothing confirms them any more. So the grant ends at the earliest of its
            # own exp and theirs (of the alternative lasting longest, where several are met).
            # This matters beyond the request: a run keeps its user's grants and its later
            # steps are checked against their expiry.
            expires = min(expires, met)
        previous = grants.get(dataset)
        grants[dataset] = expires if previous is None else max(previous, expires)
    return grants


class Passports:
    """The visa issuers the node trusts (``auth.passports``), and what their visas grant."""

    def __init__(self, settings: PassportSettings) -> None:
        self.settings = settings
        self._keys = {iss: KeySource(source) for iss, source in settings.trusted_issuers.items()}

    def __bool__(self) -> bool:
        return bool(self._keys)

    def verified(self, passport: Sequence[object]) -> list[Visa]:
        """The visas of ``passport`` (a ``ga4gh_passport_v1`` list) that count."""
        visas: list[Visa] = []
        for raw in passport[:MAX_VISAS]:
            visa = self._verify(raw)
            if visa is not None:
                visas.append(visa)
        return visas

    def grants(self, passport: Sequence[object]) -> dict[str, float | None]:
        """Dataset id -> when the grant expires, from ``passport``."""
        return dataset_grants(self.verified(passport))

    def _verify(self, raw: object) -> Visa | None:
        if not isinstance(raw, str):
            return None
        try:
            issuer = jwt.decode(raw, options={"verify_signature": False}).get("iss")
        except jwt.InvalidTokenError:
            log.info("ignored a visa that is not a JWT")
            return None
        keys = self._keys.get(issuer) if isinstance(issuer, str) else None
        if keys is None:
            log.info("ignored a visa from an untrusted issuer %r", issuer)
            return None
        assert isinstance(issuer, str)
        try:
            claims = verify_jwt(
                raw,
                keys,
                algorithms=self.settings.algorithms,
                issuer=issuer,
                audience=None,
                leeway=self.settings.leeway_seconds,
                required=("exp", "iss", VISA_CLAIM),
            )
        except (InvalidToken, KeysUnavailable) as exc:
            log.info("ignored a visa of %s: %s", issuer, exc)
            return None
        body = claims.get(VISA_CLAIM)
        if not isinstance(body, dict) or not isinstance(body.get("type"), str):
            log.info("ignored a visa of %s without a visa object", issuer)
            return None
        asserted = body.get("asserted")
        if isinstance(asserted, int | float) and asserted > time.time() + _ASSERTED_SKEW:
            log.info("ignored a visa of %s asserted in the future", issuer)
            return None
        subject = claims.get("sub")
        return Visa(
            issuer=issuer,
            subject=subject if isinstance(subject, str) else None,
            expires=float(claims["exp"]),
            body=body,
        )
