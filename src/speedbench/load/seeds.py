"""Each request's sampling seed, derived from the run's one ``--seed``.

sha256 of (seed, question_id, turn), so a sampled run is reproducible across processes and machines
(Python's ``hash()`` of a str is salted per process) and a request's seed does not depend on the order or
batch in which it is sent.  In-process engines always seed their sampler with it; HTTP servers get it in the
request body (``seed``) only with ``--request-seed``.
"""

from __future__ import annotations

import hashlib

SEED_BITS = 31  # fits every server's seed field (llama.cpp's is a uint32 where 0xFFFFFFFF means "random")


def request_seed(seed: int, question_id: str, turn: int) -> int:
    digest = hashlib.sha256(f"{seed}\0{question_id}\0{turn}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << SEED_BITS) - 1)
