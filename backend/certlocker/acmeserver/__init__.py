"""certlocker as an RFC 8555 ACME server in front of its issuers.

Any stock ACME client (certbot, lego, Caddy, cert-manager, win-acme, uacme) becomes a
scoped, audited, inventoried consumer: its account is bound to one service by an External
Account Binding an operator creates (``bindings``), it may order only the names that
service is granted, its authorizations are valid from the start (the binding proves the
service; certlocker validates upstream with its own issuer), and it finalizes with its own
CSR, so the key never leaves the node. The certificate is recorded like any other
(``lifecycle``'s spec, status, audit, verification), with ``key_held_by: client``.

Modules: ``problems`` (RFC 8555 section 6.7 errors), ``jws`` (request authentication),
``nonces``, ``records`` (accounts and orders in Vault), ``bindings`` (EAB), ``server``
(the resources). The HTTP layer is ``api/acme.py``. This package is the server side's
door to ``acme``/``josepy`` (the client side's is ``issuance``).
"""
