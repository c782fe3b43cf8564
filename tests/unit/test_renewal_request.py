"""A forced renewal is durable state, not an item in one process's queue.

``CertificateService.renew`` records a ``renewal_request`` in the status and a due hint
at now before it returns; the reconciler's next tick issues from those alone (the queue
of the process that answered may die with it), and the request stands until an issuance
that started after it stores a certificate. Over the honest in-memory store.
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
from typing import Any

import pytest

from certlocker.issuance.base import IssueRequest, Journal
from certlocker.lifecycle.policy import planning, reissue
from certlocker.lifecycle.records.due_index import slot_of
from certlocker.lifecycle.service import CertificateService
from certlocker.models import CertificateStatus, IssuedCertificate, RenewalRequest, State
from tests.support.memory_issuer import MemoryIssuer
from tests.support.pools import certificate_pools
from tests.unit.test_reconciler import T0, World, info, ref, spec


class DeadQueue(CertificateService):
    """The API process that answered: it records what it must, and its queue then dies
    with it (kill -9), so the queued issuance never runs."""

    def schedule(self, *args: Any, **kwargs: Any) -> cf.Future[CertificateStatus]:
        return cf.Future()


def api_of(world: World) -> DeadQueue:
    return DeadQueue(world.store, {"test": world.issuer}, clock=world.clock,
                     pools=certificate_pools(1), due_index=world.due)


@pytest.fixture
def world():
    w = World()
    w.declare_in_vault(spec(1))
    w.reconciler.run_once()  # issued once; its next hint is at the renewal time
    yield w
    w.close()


def test_a_renewal_whose_answering_process_died_is_issued_on_the_reconcilers_next_tick(world):
    first = world.status(1).current
    world.clock.advance(dt.timedelta(minutes=5))
    api = api_of(world)
    try:
        api.renew(world.store, ref(1), actor="alice")
    finally:
        api.shutdown()
    recorded = world.status(1).renewal_request
    assert recorded == RenewalRequest(world.clock.now(), "alice")
    day, minute = slot_of(world.clock.now())
    assert f"system/schedule/{day}/{minute}/dev.svc.c1" in world.hints()

    report = world.reconciler.tick()  # a tick, not a sweep: the hint alone leads to it

    assert report.outcomes == {"issued": 1}
    after = world.status(1)
    assert after.current.serial != first.serial
    assert after.renewal_request is None  # answered
    assert world.reconciler.tick().outcomes == {}  # and not issued again
    assert world.issuer.issued == ["dev.svc.c1"] * 2


def test_a_request_made_while_an_issuance_runs_is_answered_by_the_next_one():
    """That issuance read the status (and made its key) before the request: it stores its
    certificate, but the request stands and is due at once."""
    class RequestMidway(MemoryIssuer):
        def issue(self, request: IssueRequest, journal: Journal) -> IssuedCertificate:
            if len(self.issued) == 1:  # the second issuance, a due renewal
                api.renew(world.store, ref(1), actor="alice")
            return super().issue(request, journal)

    world = World(issuer=RequestMidway(not_before=T0))
    api = api_of(world)
    try:
        world.declare_in_vault(spec(1))
        world.reconciler.run_once()
        world.clock.advance(dt.timedelta(days=61))  # renewal due
        world.issuer.not_before = world.clock.now()
        world.reconciler.tick()
        assert len(world.issuer.issued) == 2
        assert world.status(1).renewal_request is not None
        assert planning.decide(spec(1), world.status(1), world.clock.now()).reason == \
            reissue.RENEWAL_REQUESTED
        serial = world.status(1).current.serial

        world.reconciler.tick()  # the hint the issuance filed is due now

        assert len(world.issuer.issued) == 3
        assert world.status(1).current.serial != serial
        assert world.status(1).renewal_request is None
    finally:
        api.shutdown()
        world.close()


def test_a_renewal_request_ends_a_backoff(world):
    world.service.update_status(ref(1), lambda old: old.replace(
        last_error="boom", attempts=3, next_attempt_at=T0 + dt.timedelta(hours=5)))
    api = api_of(world)
    try:
        api.renew(world.store, ref(1))
    finally:
        api.shutdown()
    assert world.status(1).next_attempt_at is None
    assert world.reconciler.tick().outcomes == {"issued": 1}


@pytest.mark.parametrize("state, needed", [(State.REVOKED, True), (State.RETIRED, False)])
def test_a_revoked_certificate_an_operator_renews_is_reissued_a_retired_one_never(
        state, needed):
    request = RenewalRequest(T0, "alice")
    status = CertificateStatus(state, current=info(T0), renewal_request=request)
    decision = planning.decide(spec(1), status, T0)
    assert decision.needed is needed
    assert planning.next_action_at(spec(1), status, T0) == (T0 if needed else None)
    assert planning.decide(spec(1), status.replace(renewal_request=None), T0).needed is False


def test_the_request_round_trips_through_the_status_record():
    status = CertificateStatus(State.VALID, renewal_request=RenewalRequest(T0, "alice"))
    assert CertificateStatus.from_json(status.to_json()) == status
    assert CertificateStatus.from_json(
        CertificateStatus(State.VALID).to_json()).renewal_request is None
