"""A Twilio Proxy simulator over real HTTP, with fault knobs (``poller demo``, tests, soak).

It serves Proxy v1's Sessions and Interactions read endpoints as the official OpenAPI spec
describes them (paging, HTTP Basic auth, Twilio error bodies, a per-Service rate limit), plus a
JSON control API under ``/_sim/``. See ``model`` for how dates move, ``server`` for the order
of checks and faults, ``control`` for the control API.

    async with await start_simulator(seed=1) as running:
        service = running.simulator.add_service()["sid"]
        session = running.simulator.add_session(service)["sid"]
        running.simulator.add_interaction(service, session, body="hi")
        # point twilio.base_url at running.base_url, credentials at running.credentials
"""

from __future__ import annotations

from poller.lab.simulator.core import Simulator
from poller.lab.simulator.faults import MALFORMED_KINDS, Fault, FaultRates
from poller.lab.simulator.model import DEFAULT, ProxyState
from poller.lab.simulator.runner import (
    RunningSimulator,
    SimulatorThread,
    build_app,
    main_simulate,
    serve,
    start_simulator,
)
from poller.lab.simulator.store import Change, SimulatorError, UnknownResourceError
from poller.lab.simulator.traffic import run_traffic

__all__ = [
    "DEFAULT",
    "MALFORMED_KINDS",
    "Change",
    "Fault",
    "FaultRates",
    "ProxyState",
    "RunningSimulator",
    "Simulator",
    "SimulatorError",
    "SimulatorThread",
    "UnknownResourceError",
    "build_app",
    "main_simulate",
    "run_traffic",
    "serve",
    "start_simulator",
]
