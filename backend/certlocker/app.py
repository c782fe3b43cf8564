"""The Flask application factory: it registers the API's blueprints over services
built by the composition root (``composition.build_services``), once per process.

gunicorn calls ``create_app()`` (settings from the file named by ``CERTLOCKER_CONFIG``
and the environment); tests pass ``services`` of their own. Nothing below the API reads
Flask globals.
"""

from __future__ import annotations

from flask import Flask

from . import logs
from . import settings as settings_mod
from .composition import Services, build_services
from .settings import Settings
from .vault.token_keeper import TokenKeeper


def create_app(settings: Settings | None = None, services: Services | None = None) -> Flask:
    settings = settings or settings_mod.load()
    logs.configure(settings.log_format, settings.log_level)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    if services is None:
        services = build_services(settings)
        # Each worker keeps the token alive too, so an API without a long-running
        # reconciler does not lapse; a renewal by one leaves the others nothing to do.
        TokenKeeper(services.store).start()
    app.extensions["certlocker"] = services

    from .api import (acme, audit, bundles, certificates, credentials, dashboard, discovery,
                      grants, lifecycle_actions, metrics, openapi, problems, replacements,
                      routing, system, verification, wellknown)

    problems.init_app(app)
    routing.install(app)
    for module in (wellknown, certificates, lifecycle_actions, verification, bundles,
                   credentials, grants, system, audit, discovery, metrics, openapi,
                   dashboard, acme, replacements):
        app.register_blueprint(module.bp)
    return app
