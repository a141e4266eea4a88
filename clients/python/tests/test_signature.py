"""`Lanes-Signature` verification (no server needed)."""

from __future__ import annotations

import pytest

from lanes_client import InvalidSignature, SignatureVerifier, sign, signature

VECTOR = "842b24d9575dee4b6ec460b7e3af7d683501d84fe6279102340787c79d2e2bab"


def test_known_vector() -> None:
    assert signature("secret", 1, b"body") == VECTOR
    assert signature(b"secret", 1, b"body") == VECTOR
    assert sign("secret", b"body", timestamp=1) == f"t=1,v1={VECTOR}"


def test_accepts_once_then_refuses_the_replay() -> None:
    verifier = SignatureVerifier("secret")
    verifier.verify(f"t=1,v1={VECTOR}", b"body", now=1)
    with pytest.raises(InvalidSignature, match="replayed"):
        verifier.verify(f"t=1,v1={VECTOR}", b"body", now=2)


def test_refuses_what_does_not_match() -> None:
    verifier = SignatureVerifier("secret")
    with pytest.raises(InvalidSignature, match="does not match"):
        verifier.verify(f"t=1,v1={VECTOR}", b"body!", now=1)
    with pytest.raises(InvalidSignature, match="does not match"):
        verifier.verify(f"t=2,v1={VECTOR}", b"body", now=2)
    with pytest.raises(InvalidSignature, match="does not match"):
        SignatureVerifier("other").verify(f"t=1,v1={VECTOR}", b"body", now=1)


def test_tolerance_is_five_minutes() -> None:
    SignatureVerifier("secret").verify(f"t=1,v1={VECTOR}", b"body", now=301)
    SignatureVerifier("secret").verify(f"t=1,v1={VECTOR}", b"body", now=-299)
    with pytest.raises(InvalidSignature, match="too old"):
        SignatureVerifier("secret").verify(f"t=1,v1={VECTOR}", b"body", now=302)


@pytest.mark.parametrize("header", [None, "", "t=1", f"v1={VECTOR}", f"t=x,v1={VECTOR}", "garbage"])
def test_refuses_malformed_headers(header) -> None:
    with pytest.raises(InvalidSignature, match="no valid Lanes-Signature"):
        SignatureVerifier("secret").verify(header, b"body", now=1)


def test_a_signature_is_forgotten_after_the_tolerance() -> None:
    verifier = SignatureVerifier("secret")
    verifier.verify(f"t=1,v1={VECTOR}", b"body", now=1)
    fresh = sign("secret", b"body", timestamp=1000)
    verifier.verify(fresh, b"body", now=1000)
    assert verifier._seen == {fresh.split("v1=")[1]: 1000}
