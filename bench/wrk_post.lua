-- POST with the token from $BENCH_TOKEN (header $BENCH_HEADER) and body $BENCH_BODY.
wrk.method = "POST"
wrk.headers[os.getenv("BENCH_HEADER") or "X-Vault-Token"] = os.getenv("BENCH_TOKEN")
wrk.headers["Content-Type"] = "application/json"
wrk.body = os.getenv("BENCH_BODY") or ""
