"""The reconciler: moves every certificate toward its spec, in its own process.

Each tick takes the due-index hints filed up to now (``due_index.DueIndex.due``), and for
each certificate re-reads spec and status, decides (``planning.decide``), issues under
the certificate's lease when needed (``CertificateService.issue`` asks the decision
again under the lease, so replicas never issue twice), alerts a human when retries are
exhausted or expiry is near (``alerts``), files the next hint and deletes the handled
one. A full sweep over the inventory runs at start-up and every ``sweep_interval``, a
batch per tick: it repairs lost hints. Specs written straight into Vault are found
sooner by the spec watch (``spec_watch``), on its own cadence between ticks: each new or
rewritten spec gets a hint and is handled at once, and a rewrite clears the backoff of
an earlier failure (as cert-manager does not back off a changed spec).

One failing certificate never stops the loop; Vault unreachable or sealed makes the
loop back off and retry, and nothing is written meanwhile.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import datetime as dt
import enum
import logging
import random
import threading
import time
from typing import Iterator

from ..clock import Clock, SystemClock
from ..errors import (AlertDeliveryFailed, CertlockerError, Conflict, NotFound,
                      VaultUnavailable)
from ..models import CertificateRef, CertificateSpec, CertificateStatus, State
from ..ports import AlertSink
from .policy import alerts, planning, reissue
from . import revocation, verification
from .records.due_index import DueIndex, Hint
from .records.expiry_index import ExpiryIndex
from .records.heartbeat import FAILURE_KINDS, Heartbeats
from .ports import (AdvancingAll, CertificateIssuing, FollowingUp, FollowingUpAll,
                    RenewalInfoRefresher, Store, Verifying)
from .spec_watch import SpecChange, SpecWatch

log = logging.getLogger(__name__)



class Outcome(enum.StrEnum):
    """What handling one certificate came to (counted in ``Report``, logged). ``handle``
    may also answer a decision's reason (``in-backoff``, ``refused``, ``invalid-spec``...)
    when nothing was done."""

    ISSUED = "issued"
    FAILED = "failed"
    BUSY = "busy"  # another replica holds the lease; the hint stays for later
    GONE = "gone"  # the spec was deleted
    UP_TO_DATE = "up-to-date"
    ERROR = "error"  # handling broke (not Vault): retried after ERROR_RETRY
    STOPPED = "stopped"


ISSUED, FAILED, BUSY, GONE = Outcome.ISSUED, Outcome.FAILED, Outcome.BUSY, Outcome.GONE
UP_TO_DATE, ERROR, STOPPED = Outcome.UP_TO_DATE, Outcome.ERROR, Outcome.STOPPED
ERROR_RETRY = dt.timedelta(minutes=10)  # a certificate whose handling broke, not Vault


@dataclasses.dataclass(frozen=True)
class Options:
    interval: float = 60.0  # seconds between ticks
    jitter: float = 0.1  # +/- this fraction of the interval
    sweep_interval: float = 3600.0
    sweep_batch: int = 1000  # certificates swept per tick while a sweep runs
    max_due: int = 1000  # hints handled per tick; the rest wait for the next tick
    workers: int = 8
    vault_backoff_max: float = 300.0


@dataclasses.dataclass
class Report:
    outcomes: dict[str, int] = dataclasses.field(default_factory=dict)
    alerts: int = 0

    def add(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    @property
    def handled(self) -> int:
        return sum(self.outcomes.values())


class _AlreadyClaimed(Exception):
    pass


class Reconciler:
    def __init__(self, store: Store, certificates: CertificateIssuing, due: DueIndex, *,
                 pool: cf.Executor, notifier: AlertSink | None = None, clock: Clock | None = None,
                 options: Options = Options(),
                 policy: alerts.AlertPolicy = alerts.DEFAULT_POLICY,
                 rng: random.Random | None = None, verifier: Verifying | None = None,
                 verify_interval: dt.timedelta | None = None,
                 revocations: FollowingUp | None = None,
                 heartbeats: Heartbeats | None = None,
                 retirements: FollowingUpAll | None = None,
                 watch: SpecWatch | None = None,
                 replacements: AdvancingAll | None = None) -> None:
        self._store = store
        self._replacements = replacements
        self._retirements = retirements
        self._watch = watch
        self._heartbeats = heartbeats
        self._clock = clock or SystemClock()
        self._expiry = ExpiryIndex(store, self._clock)
        self._revocations = revocations
        self._verifier = verifier
        self._verify_interval = verify_interval if verifier is not None else None
        self._certificates = certificates
        self._due = due
        self._notifier = notifier
        self.options = options
        self._policy = policy
        self._rng = rng or random.Random()
        self._stop = threading.Event()
        self._sweep: Iterator[CertificateRef] | None = None
        self._sweep_wanted = True  # at start-up, and again after a sweep broke off
        self._sweep_started = 0.0
        self._swept = False  # a sweep finished since the last heartbeat
        self._failures = dict.fromkeys(FAILURE_KINDS, 0)  # since start, for the heartbeat
        self._failures_lock = threading.Lock()
        # ``options.workers`` threads, the reconciler's own (``close`` stops it)
        self._pool = pool

    # -- one certificate ---------------------------------------------------------------
    def handle(self, ref: CertificateRef, hint: Hint | None = None, *,
               sweeping: bool = False, report: Report | None = None) -> str:
        """Move one certificate toward its spec; returns the outcome (an ``Outcome``, or
        the decision's reason when nothing needed doing). The steps, in order: read,
        an invalid spec recorded, repairs (``_repair``), the decision, the issuance if
        needed (``_issue``), then alert, verify and file the next hint (``_follow_up``).

        :raises VaultUnavailable: Vault is down; nothing was changed by this call.
        """
        if self._stop.is_set():
            return STOPPED
        now = self._clock.now()
        found = self._store.read_spec(ref)
        if found is None:
            return self._gone(hint)
        spec = found[0]
        got = self._store.read_status(ref)
        status = got[0] if got else None
        if spec.problem is not None:
            return self._record_invalid(spec, status, hint)
        status = self._repair(ref, spec, status, sweeping)
        decision = planning.decide(spec, status, now)
        outcome: str = decision.reason
        if decision.needed:
            issued = self._issue(ref, decision, hint)
            if issued is None:
                return GONE
            outcome, status = issued
            if outcome == BUSY:
                return BUSY  # another replica holds the lease; the hint stays for later
        self._follow_up(ref, spec, status, hint, sweeping, report)
        return outcome

    def _gone(self, hint: Hint | None) -> str:
        """The spec was deleted: nothing to do, and its hint goes."""
        if hint is not None:
            self._due.remove(hint)
        return GONE

    def _record_invalid(self, spec: CertificateSpec, status: CertificateStatus | None,
                        hint: Hint | None) -> str:
        """Recorded on the certificate (once per reason), never ordered, and no hint: a
        changed spec is found again by the sweep or the spec watch."""
        if status is None or status.state is not State.INVALID or \
                status.last_error != spec.problem:
            self._certificates.mark_invalid(spec)
        if hint is not None:
            self._due.remove(hint)
        return planning.INVALID_SPEC

    def _repair(self, ref: CertificateRef, spec: CertificateSpec,
                status: CertificateStatus | None, sweeping: bool) -> CertificateStatus | None:
        """Bring the status up to date before deciding: a fixed spec's certificate is
        current again, a sweep carries on a revocation a dead worker left and repairs the
        expiry index, and the CA's renewal window is fetched again when due."""
        if status is not None and status.state is State.INVALID and status.current is not None:
            status = self._restore_valid(ref, status)
        if (sweeping and self._revocations is not None and status is not None
                and status.revocation is not None
                and status.revocation.phase not in revocation.FINAL):
            # The worker that revoked it died mid-way: carry its follow-up on.
            log.info("reconcile.revocation_follow_up", extra={
                "certificate": ref.id, "phase": status.revocation.phase})
            status = self._revocations.follow_up(ref)
        if sweeping and status is not None and status.current is not None:
            self._expiry.repair(ref, status.current.not_after)
        return self._refresh_renewal_info(spec, status)

    def _issue(self, ref: CertificateRef, decision: reissue.Decision, hint: Hint | None,
               ) -> tuple[str, CertificateStatus] | None:
        """Issue under the lease, deciding again there; the outcome and the status, or
        None when the spec was deleted meanwhile (its hint removed)."""
        asked: list[bool] = []

        def still_needed(s: CertificateSpec, st: CertificateStatus | None) -> bool:
            asked.append(planning.decide(s, st, self._clock.now()).needed)
            return asked[-1]

        log.info("reconcile.issuing", extra={"certificate": ref.id,
                                             "reason": decision.reason,
                                             "why": decision.message})
        try:
            status = self._certificates.issue(ref, decide=still_needed)
        except NotFound:
            self._gone(hint)
            return None
        if not asked:
            return BUSY, status
        if asked[-1]:
            return (ISSUED if status.last_error is None else FAILED), status
        return UP_TO_DATE, status

    def _follow_up(self, ref: CertificateRef, spec: CertificateSpec,
                   status: CertificateStatus | None, hint: Hint | None, sweeping: bool,
                   report: Report | None) -> None:
        """Alert if the status calls for it, verify the targets when due, and file the
        next hint (the handled one goes unless it is the same)."""
        if self._alert(ref, status, report):
            got = self._store.read_status(ref)
            status = got[0] if got else status
        verify_at = None
        if self._verify_interval is not None:
            verify_at = self._verify(ref, spec, status)
        new = self._due.schedule(spec, status, self._clock.now(), handled=hint,
                                 only_if_missing=sweeping and verify_at is None,
                                 also_at=verify_at)
        if hint is not None and new != hint:
            self._due.remove(hint)

    def _restore_valid(self, ref: CertificateRef,
                       status: CertificateStatus) -> CertificateStatus:
        """The spec parses again: the certificate it had is current again (a reissue, if
        the fixed spec needs one, follows from the decision as usual)."""
        def change(old: CertificateStatus | None) -> CertificateStatus:
            if old is None or old.state is not State.INVALID:
                raise _AlreadyClaimed()
            return old.replace(state=State.VALID, last_error=None)
        try:
            return self._certificates.update_status(ref, change)
        except _AlreadyClaimed:
            return status

    def _refresh_renewal_info(self, spec: CertificateSpec,
                              status: CertificateStatus | None) -> CertificateStatus | None:
        """The CA's renewal window (RFC 9773), fetched again when its Retry-After is
        over, so a window the CA moved earlier (a revocation ahead) makes it due."""
        certificates = self._certificates
        if (not isinstance(certificates, RenewalInfoRefresher) or status is None
                or status.state in planning.INACTIVE):
            return status
        try:
            refreshed = certificates.refresh_renewal_info(spec, status)
        except Conflict:
            return status  # a concurrent status write; the next pass asks again
        return refreshed

    def _verify_every(self) -> dt.timedelta:
        """The verification interval less one (jittered) tick: a check falls due on the
        last tick before the interval is over, not on the first one after it, so no node
        goes unchecked for longer than ``verify_interval``."""
        assert self._verify_interval is not None
        tick = dt.timedelta(seconds=self.options.interval * (1 + self.options.jitter))
        return max(dt.timedelta(0), self._verify_interval - tick)

    def _verify(self, ref: CertificateRef, spec: CertificateSpec,
                status: CertificateStatus | None) -> dt.datetime | None:
        """Verify the served certificate on every target node when a check is due (at
        once after a change of certificate); return when the next one is due. A failed
        probe is a result, not an error."""
        assert self._verifier is not None and self._verify_interval is not None
        now = self._clock.now()
        every = self._verify_every()
        if verification.verification_due(spec.targets, status, now, every):
            try:
                self._verifier.verify_certificate(ref, actor="reconciler")
            except Conflict:
                pass  # a concurrent status write; the next pass verifies again
            got = self._store.read_status(ref)
            status = got[0] if got else status
        return verification.next_verification_at(spec.targets, status, self._clock.now(),
                                                 every)

    def _alert(self, ref: CertificateRef, status: CertificateStatus | None,
               report: Report | None) -> bool:
        """Send the alert the status calls for, once: the kind is claimed in the status
        with check-and-set first, so of two replicas only one sends; a delivery that no
        channel accepted releases the claim, to be retried on the next pass."""
        now = self._clock.now()
        kind = alerts.should_send(status, now, self._policy)
        if kind is None:
            return False
        previous = status.alerted if status else None

        def claim(old: CertificateStatus | None) -> CertificateStatus:
            if old is None or alerts.should_send(old, now, self._policy) != kind:
                raise _AlreadyClaimed()
            return old.replace(alerted=kind)

        try:
            claimed = self._certificates.update_status(ref, claim)
        except _AlreadyClaimed:
            return False
        alert = alerts.build(ref, claimed, kind, now)
        log.warning("alert", extra={"certificate": ref.id, "kind": kind,
                                    "attempts": claimed.attempts})
        if self._notifier is not None:
            try:
                self._notifier.send(alert)
            except AlertDeliveryFailed:
                def release(old: CertificateStatus | None) -> CertificateStatus:
                    if old is None or old.alerted != kind:
                        raise _AlreadyClaimed()
                    return old.replace(alerted=previous)
                try:
                    self._certificates.update_status(ref, release)
                except _AlreadyClaimed:
                    pass
                self._count_failure("alert-delivery")
                return True
        if report is not None:
            report.alerts += 1
        return True

    def _safe_handle(self, ref: CertificateRef, hint: Hint | None, sweeping: bool,
                     report: Report) -> str:
        try:
            outcome = self.handle(ref, hint, sweeping=sweeping, report=report)
        except VaultUnavailable:
            raise
        except Exception as exc:  # one broken certificate never stops the loop
            outcome = ERROR
            self._count_failure("certificate")
            log.error("reconcile.certificate_error", extra={
                "certificate": ref.id, "error": type(exc).__name__,
                "detail": exc.detail if isinstance(exc, CertlockerError) else None})
            if hint is not None:
                self._postpone(hint)
        else:
            if outcome == FAILED:
                self._count_failure("issuance")
            if outcome not in (UP_TO_DATE, STOPPED, reissue.IN_BACKOFF):
                log.info("reconcile.certificate", extra={"certificate": ref.id,
                                                         "outcome": outcome})
        return outcome

    def _count_failure(self, kind: str) -> None:
        with self._failures_lock:
            self._failures[kind] = self._failures.get(kind, 0) + 1

    def failures(self) -> dict[str, int]:
        """Failures by kind (``heartbeat.FAILURE_KINDS``) since this process started."""
        with self._failures_lock:
            return dict(self._failures)

    def _postpone(self, hint: Hint) -> None:
        try:
            later = self._due.put(hint.ref, self._clock.now() + ERROR_RETRY)
            if later != hint:
                self._due.remove(hint)
        except CertlockerError:
            pass  # the hint stays where it was: tried again next tick

    # -- many --------------------------------------------------------------------------
    def _handle_all(self, work: list[tuple[CertificateRef, Hint | None, list[Hint]]],
                    sweeping: bool, report: Report) -> None:
        self._rng.shuffle(work)  # replicas spread over the work instead of queueing
        futures = {self._pool.submit(self._safe_handle, ref, hint, sweeping, report):
                   extra for ref, hint, extra in work}
        unavailable: VaultUnavailable | None = None
        for future in cf.as_completed(futures):
            try:
                outcome = future.result()
            except VaultUnavailable as exc:
                unavailable = exc
                continue
            report.add(outcome)
            if outcome not in (BUSY, ERROR, STOPPED):
                for stale in futures[future]:  # older duplicates of the handled hint
                    self._due.remove(stale)
        if unavailable is not None:
            raise unavailable

    def watch_step(self) -> Report:
        """Ask the spec watch what was written since its last look, and handle each of
        those certificates now: a hint first (so another replica finishes the work if
        this one dies), the backoff of a rewritten spec cleared, then the usual pass.

        :raises VaultUnavailable: when Vault cannot be read; the next tick retries.
        """
        report = Report()
        if self._watch is None:
            return report
        changes = self._watch.poll()
        if not changes:
            return report
        now = self._clock.now()
        work: list[tuple[CertificateRef, Hint | None, list[Hint]]] = []
        for change in changes:
            log.info("spec_watch.changed", extra={
                "certificate": change.ref.id, "version": change.version})
            if change.rewritten:
                self._clear_backoff(change)
            work.append((change.ref, self._due.put(change.ref, now), []))
        self._handle_all(work, sweeping=False, report=report)
        return report

    def _clear_backoff(self, change: SpecChange) -> None:
        """A spec rewritten after a failure is tried at once: the operator may have just
        fixed it. A backoff set after the rewrite (the new spec failed too) stays."""
        def clear(old: CertificateStatus | None) -> CertificateStatus:
            if (old is None or old.next_attempt_at is None or change.updated is None
                    or (old.updated_at is not None and old.updated_at > change.updated)):
                raise _AlreadyClaimed()
            return old.replace(next_attempt_at=None)

        try:
            self._certificates.update_status(change.ref, clear)
        except (_AlreadyClaimed, Conflict):
            return
        log.info("spec_watch.backoff_cleared", extra={"certificate": change.ref.id})

    def tick(self) -> Report:
        """Handle every hint due now (at most ``max_due``).

        :raises VaultUnavailable: when Vault cannot be read; the next tick retries.
        """
        report = Report()
        by_ref: dict[CertificateRef, list[Hint]] = {}
        for hint in self._due.due(self._clock.now(), self.options.max_due):
            by_ref.setdefault(hint.ref, []).append(hint)
        work: list[tuple[CertificateRef, Hint | None, list[Hint]]] = [
            (ref, hints[-1], hints[:-1]) for ref, hints in by_ref.items()]
        self._handle_all(work, sweeping=False, report=report)
        return report

    def _tidy_indexes(self) -> None:
        """Drop the index days emptied since the last sweep (see ``day_folders``)."""
        for days in (self._due.days, self._expiry.days):
            try:
                days.tidy()
            except CertlockerError as exc:
                log.warning("reconcile.index_tidy_failed", extra={"error": type(exc).__name__})

    def _finish_journals(self) -> None:
        """Journals a dead process left (see ``CertificateService.finish_journals``)."""
        try:
            self._certificates.finish_journals()
        except CertlockerError as exc:
            log.warning("reconcile.journals_unfinished", extra={"error": type(exc).__name__})

    def _finish_retirements(self) -> None:
        """Retirements a request left unfinished (the CA unreachable, a crash) and those
        whose nodes still serve the retired certificate (``retirement.follow_up_all``)."""
        if self._retirements is None:
            return
        try:
            self._retirements.follow_up_all()
        except CertlockerError as exc:
            log.warning("reconcile.retirements_unfinished", extra={"error": type(exc).__name__})

    def _advance_replacements(self) -> None:
        """Move every running mass replacement on (``replacements.advance_all``): revoke
        old certificates now served nowhere, mark finished operations done."""
        if self._replacements is None:
            return
        try:
            self._replacements.advance_all()
        except CertlockerError as exc:
            log.warning("reconcile.replacements_unfinished", extra={"error": type(exc).__name__})

    def start_sweep(self) -> None:
        self._sweep = iter(self._certificates.refs(self._store))
        self._sweep_wanted = False
        self._sweep_started = time.monotonic()
        log.info("reconcile.sweep_started")

    def sweep_step(self, limit: int | None = None) -> Report:
        """Handle the next ``limit`` certificates of the running sweep (all if None)."""
        report = Report()
        if self._sweep is None:
            return report
        batch: list[tuple[CertificateRef, Hint | None, list[Hint]]] = []
        try:
            for ref in self._sweep:
                batch.append((ref, None, []))
                if limit is not None and len(batch) >= limit:
                    break
            else:
                self._sweep = None
            self._handle_all(batch, sweeping=True, report=report)
            if self._sweep is None:
                self._tidy_indexes()
                self._finish_journals()
                self._finish_retirements()
                self._swept = True
                log.info("reconcile.sweep_finished", extra={
                    "seconds": round(time.monotonic() - self._sweep_started, 3)})
        except BaseException:
            self._sweep, self._sweep_wanted = None, True  # start over on the next tick
            raise
        return report

    # -- the loop ----------------------------------------------------------------------
    def _beat(self) -> None:
        """Record a finished tick (and whether a sweep finished since the last one)."""
        if self._heartbeats is None:
            return
        swept, self._swept = self._swept, False
        self._heartbeats.beat(swept=swept, failures=self.failures())
        if swept:
            self._heartbeats.forget_departed()

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run_once(self) -> Report:
        """A full sweep, then one tick: for tests and cron.

        :raises VaultUnavailable: when Vault cannot be reached.
        """
        self.start_sweep()
        report = self.sweep_step(None)
        tick = self.tick()
        self._advance_replacements()
        self._beat()
        for outcome, count in tick.outcomes.items():
            report.outcomes[outcome] = report.outcomes.get(outcome, 0) + count
        report.alerts += tick.alerts
        return report

    def run(self, deadline: float | None = None) -> None:
        """Tick every ``interval`` (jittered) until ``stop()`` or the monotonic
        ``deadline``; sweep at start and every ``sweep_interval``; between ticks, look
        for specs written into Vault whenever the spec watch is due."""
        failures = 0
        next_sweep = time.monotonic()
        next_tick = time.monotonic()
        while not self._stop.is_set() and (deadline is None or time.monotonic() < deadline):
            if self._watch is not None and self._watch.due():
                self._run_watch()
            if time.monotonic() < next_tick:
                self._sleep_until(next_tick, deadline)
                continue
            started = time.monotonic()
            try:
                if self._sweep is None and (self._sweep_wanted or started >= next_sweep):
                    self.start_sweep()
                    next_sweep = started + self.options.sweep_interval
                swept = self.sweep_step(self.options.sweep_batch)
                report = self.tick()
                self._advance_replacements()
                failures = 0
                self._beat()
                if report.handled or swept.handled:
                    log.info("reconcile.tick", extra={
                        "due": report.outcomes, "swept": swept.outcomes,
                        "alerts": report.alerts + swept.alerts,
                        "seconds": round(time.monotonic() - started, 3)})
                wait = self.options.interval
            except VaultUnavailable as exc:
                failures += 1
                self._count_failure("vault-unavailable")
                wait = min(self.options.interval * 2 ** min(failures, 16),
                           self.options.vault_backoff_max)
                log.warning("reconcile.vault_unavailable", extra={
                    "error": exc.detail, "retry_in": round(wait, 1)})
            except Exception as exc:
                wait = self.options.interval
                self._count_failure("tick")
                log.error("reconcile.tick_failed", extra={"error": type(exc).__name__})
            wait *= 1 + self._rng.uniform(-self.options.jitter, self.options.jitter)
            next_tick = time.monotonic() + max(0.0, wait)
            if failures and self._watch is not None:
                self._watch.postpone(wait)
            self._sleep_until(next_tick, deadline)

    def _run_watch(self) -> None:
        """One look of the spec watch. A failed look waits one tick interval; whether
        Vault is down is the ticks' to judge (and back off for)."""
        assert self._watch is not None
        started = time.monotonic()
        try:
            report = self.watch_step()
        except Exception as exc:
            self._watch.postpone(self.options.interval)
            log.warning("reconcile.watch_failed", extra={
                "error": type(exc).__name__,
                "detail": exc.detail if isinstance(exc, CertlockerError) else None})
            return
        if report.handled:
            log.info("reconcile.watch", extra={
                "outcomes": report.outcomes, "alerts": report.alerts,
                "seconds": round(time.monotonic() - started, 3)})

    def _sleep_until(self, next_tick: float, deadline: float | None) -> None:
        """Sleep until the next tick, or the spec watch's next look if sooner."""
        until = next_tick
        if self._watch is not None:
            until = min(until, time.monotonic() + self._watch.seconds_until_due())
        if deadline is not None:
            until = min(until, deadline)
        self._stop.wait(max(0.0, until - time.monotonic()))

    def close(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
