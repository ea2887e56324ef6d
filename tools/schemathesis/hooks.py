"""schemathesis hooks of `make contract` (loaded through SCHEMATHESIS_HOOKS).

One Idempotency-Key per request: the generator reuses short values ("0") across requests with
different bodies, which the API rightly answers 422 (IETF Idempotency-Key draft: a key reused
with another payload). A valid key is replaced by a fresh valid key, so positive cases stay
positive; an invalid key (a negative case) is left alone, so its 400 is still checked. Replays
of one key are covered by the integration tests (tests/integration/idempotency.rs).
"""
import re
import uuid

import schemathesis

_VALID_KEY = re.compile(r"^[\x20-\x7E]*[\x21\x23-\x7E][\x20-\x7E]*$")


@schemathesis.hook
def before_call(context, case, kwargs):
    headers = case.headers or {}
    key = headers.get("Idempotency-Key")
    if isinstance(key, str) and len(key) <= 255 and _VALID_KEY.match(key.strip()):
        headers["Idempotency-Key"] = str(uuid.uuid4())
