"""The lifecycle's pure decisions: renewal time, the reissue checks, backoff, what an
operator is shown, alerts' rules, the inventory query. No I/O and no ports: each takes
the facts (spec, status, ``now``) and answers; ``test_architecture`` keeps it so."""
