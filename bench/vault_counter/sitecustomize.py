"""Loaded by the certlocker processes of a bench that counts Vault requests only (its
directory is put on their PYTHONPATH, ``bench.common.vault_counter_env``): appends each
Vault request's method and path to a file per process."""
import os
_port = os.environ.get("BENCH_VAULT_COUNT_PORT")
if _port:
    from certlocker.transport import vault_session as _vs
    _orig = _vs.CurlSession.request
    _dir = os.environ["BENCH_VAULT_COUNT_DIR"]

    def request(self, method, url, *args, **kw):
        fd = os.open(os.path.join(_dir, f"{os.getpid()}.log"),
                     os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{method} {url.split('/v1/', 1)[-1].split('?')[0]}\n".encode())
        finally:
            os.close(fd)
        return _orig(self, method, url, *args, **kw)
    _vs.CurlSession.request = request
