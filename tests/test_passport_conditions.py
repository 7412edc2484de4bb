"""GA4GH Passport visa ``conditions`` and signed (JWT) userinfo answers (issue 7).

The matcher is tested on its own, then through a live node: real visas signed with keys made
here, their JWKS and the issuer's userinfo endpoint served on loopback (``IdentityProvider`` of
``test_auth``), the grants read from the node's authenticator and the dataset policy seen
through WES.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from wes_bridge.app import create_app
from wes_bridge.auth.passports import (
    MalformedConditions,
    Visa,
    dataset_grants,
    parse_conditions,
    pattern_matches,
)
from wes_bridge.config import load_settings

from .conftest import WES, SpecCheckedClient, free_port
from .test_auth import (
    EGAD1,
    EGAD2,
    UNTRUSTED_ISSUER,
    VISA_ISSUER,
    IdentityProvider,
    _auth,
    _rsa,
    _wc_run,
    bearer,
    idp,
)

HOME_ISSUER = "https://home.example.org/"  # a second trusted visa issuer (affiliations)
AFFILIATION = "AffiliationAndRole"
STATUS = "ResearcherStatus"
BONA_FIDE = "https://doi.org/10.1038/s41431-018-0219-y"
ELIXIR = "https://visas.elixir.org"

__all__ = ["idp"]  # the identity provider fixture, shared with test_auth


# -- the matcher on its own ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pattern", "text", "expected"),
    [
        ("faculty@*", "faculty@uni-heidelberg.de", True),
        ("faculty@*", "student@uni-heidelberg.de", False),
        ("faculty@*", "faculty@", True),
        ("*@*.ac.uk", "member@cam.ac.uk", True),
        ("*@*.ac.uk", "member@cam.ac.uk.evil.org", False),
        ("?", "a", True),
        ("?", "", False),
        ("??", "abc", False),
        ("*", "", True),
        ("", "", True),
        ("", "a", False),
        ("a*b*c", "aXbYbZc", True),
        ("a*b*c", "aXbYbZcd", False),
        ("https://example?.org", "https://example1.org", True),
        ("FACULTY@*", "faculty@x.org", False),  # case-sensitive
        ("[ab]*", "a.org", False),  # '[' is no set, unlike fnmatch
        ("[ab]*", "[ab].org", True),
        ("*a*a*a*a*a*a*a*a*b", "a" * 200, False),  # no exponential backtracking
    ],
)
def test_pattern_matching(pattern: str, text: str, expected: bool) -> None:
    started = time.monotonic()
    assert pattern_matches(pattern, text) is expected
    assert time.monotonic() - started < 1


@pytest.mark.parametrize(
    "conditions",
    [
        {"type": AFFILIATION, "value": "const:x"},  # not a list
        [],  # an empty OR: met by nothing, yet meant as a restriction
        [[]],  # an empty AND would be met by anything
        [{"type": AFFILIATION, "value": "const:x"}],  # a clause where an alternative belongs
        [["a clause"]],
        [[{"value": "const:faculty@x.org"}]],  # no type
        [[{"type": AFFILIATION}]],  # nothing to match besides the type
        [[{"type": AFFILIATION, "value": "faculty@x.org"}]],  # no <method>: prefix
        [[{"type": AFFILIATION, "value": 7}]],
        [[{"type": AFFILIATION, "asserted": "const:1700000000"}]],  # a timestamp
        [[{"type": AFFILIATION, "conditions": "const:x"}]],  # a condition on a condition
    ],
)
def test_malformed_conditions_are_refused(conditions: Any) -> None:
    with pytest.raises(MalformedConditions):
        parse_conditions(conditions)


def test_unknown_claims_and_methods_make_a_clause_unmeetable() -> None:
    [[unknown_method], [unknown_claim], [fine]] = parse_conditions(
        [
            [{"type": AFFILIATION, "value": "regex:faculty@.*"}],
            [{"type": AFFILIATION, "department": "const:genetics"}],
            [{"type": AFFILIATION, "value": "split_pattern:faculty@*"}],
        ]
    )
    assert "regex" in (unknown_method.unsupported or "")
    assert "department" in (unknown_claim.unsupported or "")
    assert fine.unsupported is None
    visa = _visa(AFFILIATION, "faculty@x.org", 100)
    assert not unknown_method.matches(visa)
    assert not unknown_claim.matches(visa)
    assert fine.matches(visa)


def _visa(
    kind: str,
    value: str,
    expires: float,
    *,
    sub: str = "alice",
    issuer: str = VISA_ISSUER,
    conditions: Any = None,
    **extra: str,
) -> Visa:
    body: dict[str, Any] = {"type": kind, "value": value, "source": ELIXIR, **extra}
    if conditions is not None:
        body["conditions"] = conditions
    return Visa(issuer=issuer, subject=sub, expires=expires, body=body)


def test_or_of_ands_and_the_grants_expiry() -> None:
    faculty = {"type": AFFILIATION, "value": "pattern:faculty@*", "by": "const:so"}
    bona_fide = {"type": STATUS, "value": f"const:{BONA_FIDE}"}
    member = {"type": AFFILIATION, "value": "const:member@embl.de"}
    conditions = [[faculty, bona_fide], [member]]
    grant = _visa("ControlledAccessGrants", EGAD1, 10_000, conditions=conditions)
    faculty_visa = _visa(AFFILIATION, "faculty@uni-heidelberg.de", 5_000, by="so")
    status_visa = _visa(STATUS, BONA_FIDE, 4_000)
    # The first alternative, whole: until the first of its visas expires.
    assert dataset_grants([grant, faculty_visa, status_visa]) == {EGAD1: 4_000}
    # Half of it (AND): nothing; nor with `by` missing ("unknown" authority) or another value.
    assert dataset_grants([grant, faculty_visa]) == {}
    assert dataset_grants([grant, _visa(AFFILIATION, "faculty@x.org", 5_000), status_visa]) == {}
    assert dataset_grants([grant, _visa(AFFILIATION, "student@x.org", 5_000, by="so")]) == {}
    # The second alternative alone (OR); with both met, the one lasting longer counts.
    assert dataset_grants([grant, _visa(AFFILIATION, "member@embl.de", 6_000)]) == {EGAD1: 6_000}
    both = [grant, faculty_visa, status_visa, _visa(AFFILIATION, "member@embl.de", 3_000)]
    assert dataset_grants(both) == {EGAD1: 4_000}
    # Several visas meeting one clause: the latest counts; never beyond the grant's own exp.
    members = [_visa(AFFILIATION, "member@embl.de", t) for t in (2_000, 8_000, 20_000)]
    assert dataset_grants([grant, *members[:2]]) == {EGAD1: 8_000}
    assert dataset_grants([grant, *members]) == {EGAD1: 10_000}
    # A visa with conditions of its own never meets a clause (no chains of conditions).
    chained = _visa(AFFILIATION, "member@embl.de", 6_000, conditions=[[member]])
    assert dataset_grants([grant, chained]) == {}
    # An unconditional grant of the same dataset still stands alone.
    assert dataset_grants([grant, _visa("ControlledAccessGrants", EGAD1, 900)]) == {EGAD1: 900}


def test_conditions_across_visa_identities_need_linked_identities() -> None:
    member = [[{"type": AFFILIATION, "value": "const:member@embl.de"}]]
    grant = _visa("ControlledAccessGrants", EGAD1, 10_000, conditions=member)
    elsewhere = _visa(AFFILIATION, "member@embl.de", 9_000, sub="u-123", issuer=HOME_ISSUER)
    # Another (sub, iss): not the grant's user as far as the node can tell.
    assert dataset_grants([grant, elsewhere]) == {}
    assert dataset_grants([grant, _visa(AFFILIATION, "member@embl.de", 9_000, sub="bob")]) == {}
    # Linked (sub and iss URI-encoded, ';' between identities): the link's exp bounds the grant.
    link = _visa(
        "LinkedIdentities", "u-123,https%3A%2F%2Fhome.example.org%2F;x,https%3A%2F%2Fy", 7_000
    )
    assert dataset_grants([grant, elsewhere, link]) == {EGAD1: 7_000}
    # A chain of two links, as the spec allows: the shortest-lived link bounds it.
    hop = _visa("LinkedIdentities", "u-123,https%3A%2F%2Fhome.example.org%2F", 6_000, sub="m")
    first = _visa("LinkedIdentities", "m,https%3A%2F%2Fvisas.example.org%2F", 8_000)
    assert dataset_grants([grant, elsewhere, hop, first]) == {EGAD1: 6_000}
    # A link with conditions of its own does not count.
    conditional_link = _visa(link.body["type"], link.body["value"], 7_000, conditions=member)
    assert dataset_grants([grant, elsewhere, conditional_link]) == {}


# -- through a live node ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("datasets")
    for name in ("EGAD1", "EGAD2"):
        (root / name).mkdir()
        (root / name / "reads.txt").write_text(f"reads of {name}\n")
    return root


@pytest.fixture(scope="module")
def node(
    tmp_path_factory: pytest.TempPathFactory, idp: IdentityProvider, datasets: Path
) -> Iterator[SpecCheckedClient]:
    auth = _auth(idp, datasets)
    auth["passports"]["trusted_issuers"][HOME_ISSUER] = {"jwks_url": f"{idp.url}/visa-jwks.json"}
    settings = load_settings(
        data_dir=tmp_path_factory.mktemp("node") / "data",
        port=free_port(),
        cancel_grace_seconds=2,
        auth=auth,
        tes={"input_roots": [str(datasets)]},
    )
    with SpecCheckedClient(create_app(settings)) as client:
        yield client


def _token(idp: IdentityProvider, sub: str = "alice", **claims: Any) -> str:
    # A jti of its own, so no two tokens of a test are the same string (the node caches them).
    return idp.token(sub, jti=uuid.uuid4().hex, **claims)


def _grants(node: SpecCheckedClient, token: str) -> dict[str, float | None]:
    principal = node.app.state.node.auth.authenticate(f"Bearer {token}", "wes")
    return dict(principal.grants)


FACULTY = {"type": AFFILIATION, "value": "const:faculty@uni-heidelberg.de", "by": "const:so"}
ANY_FACULTY = {"type": AFFILIATION, "value": "pattern:faculty@*", "source": f"const:{ELIXIR}"}


def test_a_grant_whose_conditions_hold(node: SpecCheckedClient, idp: IdentityProvider) -> None:
    for clause in (FACULTY, ANY_FACULTY):
        grant = idp.visa(EGAD1, lifetime=7200, conditions=[[clause]])
        affiliation = idp.visa(
            "faculty@uni-heidelberg.de", kind=AFFILIATION, source=ELIXIR, by="so", lifetime=1800
        )
        grants = _grants(node, _token(idp, ga4gh_passport_v1=[grant, affiliation]))
        assert set(grants) == {EGAD1}, clause
        # Until the affiliation it rests on expires, not the grant's own two hours.
        expires = grants[EGAD1]
        assert expires is not None
        assert time.time() + 1700 < expires < time.time() + 1900


def test_a_grant_whose_conditions_fail_is_refused(
    node: SpecCheckedClient,
    idp: IdentityProvider,
    datasets: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    grant = idp.visa(EGAD1, conditions=[[FACULTY]])
    student = idp.visa("student@uni-heidelberg.de", kind=AFFILIATION, by="so")
    rogue_faculty = idp.visa(
        "faculty@uni-heidelberg.de",
        kind=AFFILIATION,
        by="so",
        issuer=UNTRUSTED_ISSUER,
        key=idp.rogue_key,
    )
    forged_faculty = idp.visa(
        "faculty@uni-heidelberg.de", kind=AFFILIATION, by="so", key=idp.rogue_key
    )
    expired_faculty = idp.visa(
        "faculty@uni-heidelberg.de", kind=AFFILIATION, by="so", lifetime=-600
    )
    other_users_faculty = idp.visa(
        "faculty@uni-heidelberg.de", kind=AFFILIATION, by="so", sub="u-9", issuer=HOME_ISSUER
    )
    passports = {
        "nothing meets it": [grant],
        "another role": [grant, student],
        "untrusted issuer": [grant, rogue_faculty],
        "a trusted issuer's name, another key": [grant, forged_faculty],
        "expired": [grant, expired_faculty],
        "another visa identity, not linked": [grant, other_users_faculty],
    }
    location = (datasets / "EGAD1" / "reads.txt").as_uri()
    with caplog.at_level(logging.INFO, logger="wes_bridge.auth"):
        for name, passport in passports.items():
            token = _token(idp, ga4gh_passport_v1=passport)
            assert _grants(node, token) == {}, name
            response = _wc_run(node, token, location)
            assert response.status_code == 403, (name, response.text)
            assert EGAD1 in response.json()["msg"], name
    assert "its conditions are not met" in caplog.text
    # The same passport plus the visa the conditions ask for: granted, and the run accepted.
    token = _token(
        idp,
        ga4gh_passport_v1=[
            grant,
            rogue_faculty,
            idp.visa("faculty@uni-heidelberg.de", kind=AFFILIATION, by="so"),
        ],
    )
    assert set(_grants(node, token)) == {EGAD1}
    response = _wc_run(node, token, location)
    assert response.status_code == 200, response.text
    run_id = response.json()["run_id"]
    assert node.post(f"{WES}/runs/{run_id}/cancel", headers=bearer(token)).status_code == 200


def test_alternatives_and_linked_identities(node: SpecCheckedClient, idp: IdentityProvider) -> None:
    status = {"type": STATUS, "value": f"const:{BONA_FIDE}"}
    embl = {
        "type": AFFILIATION,
        "value": "split_pattern:member@embl.*",
        "source": f"const:{ELIXIR}",
    }
    grant = idp.visa(EGAD2, conditions=[[FACULTY, status], [embl]])
    faculty = idp.visa("faculty@uni-heidelberg.de", kind=AFFILIATION, by="so")
    bona_fide = idp.visa(BONA_FIDE, kind=STATUS, source="https://ega-archive.org", by="system")
    member = idp.visa(
        "member@embl.de", kind=AFFILIATION, source=ELIXIR, sub="u-1", issuer=HOME_ISSUER
    )
    link = idp.visa(
        "u-1,https%3A%2F%2Fhome.example.org%2F", kind="LinkedIdentities", source=HOME_ISSUER
    )
    cases = {
        "first alternative, both clauses": ([grant, faculty, bona_fide], {EGAD2}),
        "first alternative, one clause of two": ([grant, faculty], set()),
        "second alternative, another identity": ([grant, member], set()),
        "second alternative, identity linked": ([grant, member, link], {EGAD2}),
        "an unconditional grant beside it": ([grant, idp.visa(EGAD1)], {EGAD1}),
    }
    for name, (passport, expected) in cases.items():
        assert set(_grants(node, _token(idp, ga4gh_passport_v1=passport))) == expected, name


def test_malformed_conditions_and_unknown_methods_give_nothing(
    node: SpecCheckedClient, idp: IdentityProvider, caplog: pytest.LogCaptureFixture
) -> None:
    faculty = idp.visa("faculty@uni-heidelberg.de", kind=AFFILIATION, by="so")
    cases = {
        "no prefix": ([[{"type": AFFILIATION, "value": "faculty@uni-heidelberg.de"}]], "<method>:"),
        "empty alternative": ([[]], "non-empty"),
        "not a list": ({"type": AFFILIATION, "value": "const:x"}, "non-empty list"),
        "unknown method": ([[{"type": AFFILIATION, "value": "regex:faculty@.*"}]], "'regex'"),
        "unknown claim": ([[{"type": AFFILIATION, "role": "const:faculty"}]], "'role'"),
    }
    for name, (conditions, logged) in cases.items():
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="wes_bridge.auth"):
            token = _token(idp, ga4gh_passport_v1=[idp.visa(EGAD1, conditions=conditions), faculty])
            assert _grants(node, token) == {}, name
        assert logged in caplog.text, (name, caplog.text)


# -- signed userinfo --------------------------------------------------------------------------
def test_passport_from_a_signed_userinfo_answer(
    node: SpecCheckedClient, idp: IdentityProvider, caplog: pytest.LogCaptureFixture
) -> None:
    passport = [idp.visa(EGAD1)]
    other_key = _rsa()
    cases: dict[str, tuple[Any, str | None]] = {
        "signed": (idp.signed_userinfo("erin", ga4gh_passport_v1=passport), None),
        "signed, no aud": (idp.signed_userinfo("erin", aud=None, ga4gh_passport_v1=passport), None),
        "signed for the client (azp)": (
            idp.signed_userinfo("erin", aud="the-portal", ga4gh_passport_v1=passport),
            None,
        ),
        "JSON": ({"sub": "erin", "ga4gh_passport_v1": passport}, None),
        "signed by another key": (
            idp.signed_userinfo("erin", key=other_key, ga4gh_passport_v1=passport),
            "signature",
        ),
        "signed, another sub": (
            idp.signed_userinfo("mallory", ga4gh_passport_v1=passport),
            "sub is not the token's",
        ),
        "JSON, another sub": (
            {"sub": "mallory", "ga4gh_passport_v1": passport},
            "sub is not the token's",
        ),
        "JSON, no sub": ({"ga4gh_passport_v1": passport}, "sub is not the token's"),
        "signed, another issuer": (
            idp.signed_userinfo(
                "erin", iss="https://other.example.org/", ga4gh_passport_v1=passport
            ),
            "iss",
        ),
        "signed, no iss": (
            idp.signed_userinfo("erin", iss=None, ga4gh_passport_v1=passport),
            "iss",
        ),
        "signed, for another service": (
            idp.signed_userinfo("erin", aud="another-service", ga4gh_passport_v1=passport),
            "aud",
        ),
        "signed, expired": (
            idp.signed_userinfo("erin", exp=int(time.time()) - 600, ga4gh_passport_v1=passport),
            "expired",
        ),
    }
    for name, (answer, refused) in cases.items():
        token = _token(idp, "erin", azp="the-portal")
        idp.userinfo[token] = answer
        accepts = len(idp.userinfo_accept)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="wes_bridge.auth"):
            grants = _grants(node, token)
        assert idp.userinfo_accept[accepts:] == ["application/json, application/jwt"], name
        if refused is None:
            assert set(grants) == {EGAD1}, name
        else:
            assert grants == {}, name
            assert refused in caplog.text, (name, caplog.text)
