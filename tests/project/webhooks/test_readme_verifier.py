"""The README's ten lines of Python that verify a webhook accept what we sign and nothing else."""

import re
import time

from project.webhooks.signing import new_secret, signed_headers
from tests.support import ROOT


def readme_verify():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- webhook-verify -->\n```python\n(.*?)```", text, re.S)
    assert block, "the README's webhook verifier is gone"
    namespace: dict = {}
    exec(block.group(1), namespace)  # noqa: S102 - our own README's example, run as a reader would
    return namespace["verify"]


def test_the_readme_verifier_accepts_our_signature_and_refuses_a_change_or_an_old_attempt():
    verify = readme_verify()
    secret = new_secret()
    body = b'{"data":{"order":{"number":"R-1"}},"timestamp":"2026-12-05T00:00:00Z","type":"order.paid"}'
    now = int(time.time())
    headers = signed_headers(secrets=secret, webhook_id="msg_1", timestamp=now, body=body)

    assert verify(secret, headers, body)
    assert not verify(secret, headers, body.replace(b"R-1", b"R-2"))
    assert not verify(new_secret(), headers, body)
    assert not verify(secret, {**headers, "webhook-id": "msg_2"}, body)
    old = signed_headers(secrets=secret, webhook_id="msg_1", timestamp=now - 3600, body=body)
    assert not verify(secret, old, body)
    # Two signatures (a secret being rotated): either one verifies.
    both = signed_headers(secrets=[new_secret(), secret], webhook_id="msg_1", timestamp=now, body=body)
    assert verify(secret, both, body)
