"""Loaded by the API and reconciler processes of ``bench.cpu_issuance --count`` only (its
directory is put on their PYTHONPATH): appends each Vault request's method and path to
a file per process."""
import os
_port = os.environ.get("BENCH_VAULT_COUNT_PORT")
if _port:
    import urllib3.poolmanager as _pm
    _orig = _pm.PoolManager.urlopen
    _dir = os.environ["BENCH_VAULT_COUNT_DIR"]

    def urlopen(self, method, url, redirect=True, **kw):
        if "/v1/" in url:
            fd = os.open(os.path.join(_dir, f"{os.getpid()}.log"),
                         os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, f"{method} {url.split('/v1/', 1)[1].split('?')[0]}\n".encode())
            finally:
                os.close(fd)
        return _orig(self, method, url, redirect=redirect, **kw)
    _pm.PoolManager.urlopen = urlopen
