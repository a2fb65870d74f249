"""``ProxyState``: the in-memory Twilio Proxy (services, sessions, interactions, clock, log).

Dates have Twilio's 1-second resolution. Every status change moves the interaction's
``date_updated`` strictly forward: when an interaction changes twice within one second, the
simulator advances its own clock (``clock_offset``) by the missing second, so every change
yields a new fingerprint; the simulated clock may then run ahead of the injected one. Like
Twilio's, a session's ``date_last_interaction`` follows its latest change, so two changes of
one session within one second may leave it unchanged in between; ``strict_session_dates=True``
makes every change of a session (creations included) take a later second than the previous one
(at the cost of a clock that runs ahead under bursts).

Thread-safe: every public method holds one lock, so sync tests may call it from any thread
while the server answers from its own loop.
"""

from __future__ import annotations

import json
from enum import Enum
from typing import Any, Final, Literal

from poller.lab.simulator.records import (
    SimInteraction,
    SimService,
    SimSession,
    iso,
    progression,
)
from poller.lab.simulator.store import (
    Change,
    ProxyStore,
    SimulatorError,
)
from poller.twilio.records import Fingerprint

SESSION_STATUSES = frozenset({"open", "in-progress", "closed", "failed", "unknown"})
_FINAL_SESSION = frozenset({"closed", "failed"})
_DEFAULT_MESSAGE_DATA = json.dumps({"body": "Hello from the simulator"})


class _Default(Enum):
    TOKEN = 0


DEFAULT: Final = _Default.TOKEN
"""Use the type's first status (``add_interaction``)."""


def _status_or_default(status: str | _Default | None, type_: str, side: str) -> str | None:
    return progression(type_, side)[0] if status is DEFAULT else status


class ProxyState(ProxyStore):
    """A Twilio Proxy account's data: Services, Sessions, Interactions, its clock and log."""

    # -- services and sessions ---------------------------------------------------------------

    def add_service(self, friendly_name: str = "Simulated Service") -> dict[str, Any]:
        with self._lock:
            service = SimService(self.new_sid("KS"), friendly_name, self.now())
            self._services[service.sid] = service
            return service.to_json(self.account_sid, self.base_url)

    def add_session(
        self,
        service_sid: str,
        *,
        unique_name: str | None = None,
        mode: str = "voice-and-message",
        ttl: int = 0,
        at: int | None = None,
    ) -> dict[str, Any]:
        """Add an open session; ``at`` backdates its creation (Unix seconds)."""
        with self._lock:
            service = self._service(service_sid)
            if unique_name is not None and unique_name in service.unique_names:
                raise SimulatorError(f"unique_name {unique_name!r} is taken in {service_sid}")
            now = min(self.now(), at) if at is not None else self.now()
            session = SimSession(
                sid=self.new_sid("KC"),
                service_sid=service_sid,
                unique_name=unique_name,
                status="open",
                mode=mode,
                ttl=ttl,
                participants=(self.new_sid("KP"), self.new_sid("KP")),
                date_created=now,
                date_updated=now,
                date_started=now,
                last_stamp=now,
            )
            service.sessions.add(session.sid, session)
            if unique_name is not None:
                service.unique_names[unique_name] = session.sid
            self._sessions[session.sid] = session
            return session.to_json(self.account_sid, self.base_url)

    def set_session_status(
        self, session_sid: str, status: str, *, reason: str | None = None
    ) -> dict[str, Any]:
        """Change a session's status (``closed``/``failed`` also set ``date_ended``)."""
        if status not in SESSION_STATUSES:
            raise SimulatorError(f"session status: expected one of {sorted(SESSION_STATUSES)}")
        with self._lock:
            session = self._session(session_sid)
            stamp = self._stamp(session, after=session.date_updated)
            session.status = status
            session.date_updated = stamp
            if status in _FINAL_SESSION:
                session.date_ended = stamp
                session.closed_reason = reason or ""
            return session.to_json(self.account_sid, self.base_url)

    def close_session(self, session_sid: str, reason: str = "") -> dict[str, Any]:
        return self.set_session_status(session_sid, "closed", reason=reason)

    def delete_session(self, session_sid: str) -> None:
        """Remove a session and its interactions (later reads answer 404)."""
        with self._lock:
            session = self._session(session_sid)
            service = self._services[session.service_sid]
            service.sessions.remove(session_sid)
            if session.unique_name is not None:
                service.unique_names.pop(session.unique_name, None)
            for interaction in session.interactions:
                self._interactions.pop(interaction.sid, None)
            del self._sessions[session_sid]

    # -- interactions ------------------------------------------------------------------------

    def add_interaction(
        self,
        service_sid: str,
        session_sid: str,
        type: Literal["message", "voice"] = "message",
        body: str | None = None,
        inbound_status: str | _Default | None = DEFAULT,
        outbound_status: str | _Default | None = DEFAULT,
        duration: int | None = None,
        at: int | None = None,
    ) -> dict[str, Any]:
        """Add an interaction; statuses default to the first of the type's progression.

        ``at`` backdates its creation (Unix seconds), never before the session's last change.
        """
        with self._lock:
            interaction = self._create_interaction(
                service_sid,
                session_sid,
                type,
                body,
                inbound_status,
                outbound_status,
                duration,
                at,
            )
            return interaction.to_json(self.account_sid, self.base_url)

    def _create_interaction(
        self,
        service_sid: str,
        session_sid: str,
        type_: str,
        body: str | None,
        inbound_status: str | _Default | None,
        outbound_status: str | _Default | None,
        duration: int | None,
        at: int | None,
    ) -> SimInteraction:
        if type_ not in ("message", "voice"):
            raise SimulatorError(f"type: expected 'message' or 'voice', got {type_!r}")
        session = self._session(session_sid, service_sid)
        if session.status in _FINAL_SESSION:
            raise SimulatorError(f"session {session_sid} is {session.status}")
        stamp = self._stamp(session, at=at)
        interaction = self._new_interaction(session, type_, body, duration, stamp)
        interaction.inbound_status = _status_or_default(inbound_status, type_, "inbound")
        interaction.outbound_status = _status_or_default(outbound_status, type_, "outbound")
        session.interactions.add(interaction.sid, interaction)
        self._interactions[interaction.sid] = interaction
        self._owners[interaction.sid] = (service_sid, session_sid)
        self._touch(session, stamp)
        self._log(interaction)
        return interaction

    def _new_interaction(
        self, session: SimSession, type_: str, body: str | None, duration: int | None, stamp: int
    ) -> SimInteraction:
        resource_type, prefix = ("Call", "CA") if type_ == "voice" else ("Message", "SM")
        if type_ == "voice":
            data = json.dumps({"duration": str(duration)}) if duration is not None else "{}"
        else:
            data = _DEFAULT_MESSAGE_DATA if body is None else json.dumps({"body": body})
        inbound_participant, outbound_participant = session.participants
        if self._ids.random() < 0.5:
            inbound_participant, outbound_participant = outbound_participant, inbound_participant
        return SimInteraction(
            sid=self._sid("KI"),
            service_sid=session.service_sid,
            session_sid=session.sid,
            type=type_,
            data=data,
            inbound_participant_sid=inbound_participant,
            inbound_resource_sid=self._sid(prefix),
            inbound_resource_type=resource_type,
            inbound_status=None,
            outbound_participant_sid=outbound_participant,
            outbound_resource_sid=self._sid(prefix),
            outbound_resource_type=resource_type,
            outbound_status=None,
            date_created=stamp,
            date_updated=stamp,
        )

    def set_status(
        self, interaction_sid: str, inbound: str | None = None, outbound: str | None = None
    ) -> dict[str, Any]:
        """Set either status (None keeps it); always moves ``date_updated`` forward."""
        with self._lock:
            interaction = self._interaction(interaction_sid)
            session = self._sessions[interaction.session_sid]
            stamp = self._stamp(session, after=interaction.date_updated)
            if inbound is not None:
                interaction.inbound_status = inbound
            if outbound is not None:
                interaction.outbound_status = outbound
            if (
                interaction.type == "voice"
                and interaction.outbound_status == "completed"
                and interaction.data == "{}"
            ):
                interaction.data = json.dumps({"duration": str(self._ids.randint(5, 600))})
            interaction.date_updated = stamp
            self._touch(session, stamp)
            self._log(interaction)
            return interaction.to_json(self.account_sid, self.base_url)

    def advance(self, interaction_sid: str) -> dict[str, Any] | None:
        """Move the interaction one step along its progression; None when it is settled."""
        with self._lock:
            interaction = self._interaction(interaction_sid)
            for side in ("outbound", "inbound"):
                steps = progression(interaction.type, side)
                current = getattr(interaction, f"{side}_status")
                if current in steps and current != steps[-1]:
                    following = steps[steps.index(current) + 1]
                    return self.set_status(interaction_sid, **{side: following})
            return None

    def delete_interaction(self, interaction_sid: str) -> None:
        with self._lock:
            interaction = self._interaction(interaction_sid)
            self._sessions[interaction.session_sid].interactions.remove(interaction_sid)
            del self._interactions[interaction_sid]

    def _touch(self, session: SimSession, stamp: int) -> None:
        session.date_last_interaction = max(session.date_last_interaction or 0, stamp)
        if session.status == "open":
            session.status = "in-progress"
            session.date_updated = max(session.date_updated, stamp)

    def _log(self, interaction: SimInteraction) -> None:
        fingerprint = Fingerprint(
            iso(interaction.date_updated),
            interaction.inbound_status,
            interaction.outbound_status,
        )
        self._changes.append(Change(interaction.sid, fingerprint))

    def seed_data(
        self,
        sessions: int,
        interactions_per_session: int = 0,
        *,
        service_sid: str | None = None,
        history_seconds: int = 3600,
    ) -> tuple[str, list[str]]:
        """Create (or fill) a Service with sessions holding settled, backdated interactions."""
        with self._lock:
            service = service_sid or self.add_service()["sid"]
            start = self.now() - history_seconds
            step = max(1, (history_seconds - 1) // max(1, interactions_per_session))
            created: list[str] = []
            for _ in range(sessions):
                name = f"Session {len(self._services[service].sessions) + 1}"
                sid = self.add_session(service, unique_name=name, at=start)["sid"]
                created.append(sid)
                for index in range(interactions_per_session):
                    at = start + 1 + index * step
                    self._create_interaction(
                        service, sid, "message", None, DEFAULT, "delivered", None, at
                    )
            return service, created
