"""The state contract: ``due()`` agrees with its definition after any run of operations.

Hypothesis drives each backend and a model of the outbox side by side; every example starts
from an empty store of the backend under test (on PostgreSQL, one store on the test's one
database with every table emptied: much cheaper than a database, or a store, per example).
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poller.state.base import StateStore
from tests.state.cases import enqueue, ids_of, make_event
from tests.state.conftest import open_backend

Model = dict[int, dict[str, object]]

_operation = st.one_of(
    st.tuples(st.just("enqueue"), st.sampled_from("abc"), st.sets(st.sampled_from(["x", "y"]))),
    st.tuples(st.just("ack"), st.integers(0, 50)),
    st.tuples(st.just("retry"), st.integers(0, 50), st.sampled_from([0.0, 5.0, 10.0])),
    st.tuples(st.just("dead"), st.integers(0, 50)),
    st.tuples(st.just("requeue"), st.integers(0, 50)),
    st.tuples(st.just("purge"), st.integers(0, 50)),
)


def expected_due(rows: Model, sink: str, now: float | None) -> list[int]:
    """due() by its definition: the first pending row of each queue, if its timer allows."""
    heads: dict[object, int] = {}
    for rid in sorted(rows):
        row = rows[rid]
        if row["sink"] == sink and row["state"] == "pending":
            heads.setdefault(row["session"], rid)
    due = [rid for rid in heads.values() if now is None or rows[rid]["next"] <= now]  # type: ignore[operator]
    return sorted(due)


def test_due_matches_its_definition_after_any_operations(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    folders = (tmp_path / str(n) for n in itertools.count())
    with asyncio.Runner() as runner:
        # PostgreSQL: one store on the test's one database, emptied before each example
        # (opening a store per example costs more than the example itself).
        shared = (
            runner.run(open_backend(backend, tmp_path, request)) if backend == "postgres" else None
        )

        @settings(max_examples=80, deadline=None)
        @given(st.lists(_operation, max_size=30))
        def check(operations: list[tuple[object, ...]]) -> None:
            folder = next(folders)
            folder.mkdir()

            async def one() -> None:
                if shared is not None:
                    await empty_postgres(shared)
                    await run_against_model(shared, operations)
                    return
                store = await open_backend(backend, folder, request)
                try:
                    await run_against_model(store, operations)
                finally:
                    await store.close()

            runner.run(one())

        try:
            check()
        finally:
            if shared is not None:
                runner.run(shared.close())


async def empty_postgres(store: StateStore) -> None:
    """Empty every table of a PostgreSQL store, whatever the examples before left in it."""
    from poller.state.postgres.store import PostgresStore

    assert isinstance(store, PostgresStore)
    # DELETE, not TRUNCATE: on tables this small it is ~15 times faster.
    async with store.db.transaction() as cur:
        await cur.execute(_TABLES_AND_REFERENCES)
        for table in referencing_first(await cur.fetchall()):
            await cur.execute(f'DELETE FROM "{table}"'.encode())  # noqa: S608 (catalog names)


# Every table of the state but the schema's own, and the tables each one references.
_TABLES_AND_REFERENCES = """
SELECT t.relname, array_remove(array_agg(r.relname::text), NULL) FROM pg_class t
LEFT JOIN pg_constraint f ON f.conrelid = t.oid AND f.contype = 'f'
LEFT JOIN pg_class r ON r.oid = f.confrelid
WHERE t.relkind = 'r' AND t.relnamespace = current_schema()::regnamespace
AND t.relname NOT IN ('poller_schema', 'meta') GROUP BY t.relname
"""


def referencing_first(rows: list[tuple[str, list[str]]]) -> list[str]:
    """The tables in an order that deletes each before any table it references."""
    references = {table: set(refs) - {table} for table, refs in rows}
    order: list[str] = []
    while references:
        free = sorted(t for t in references if not any(t in r for r in references.values()))
        assert free, f"tables that reference each other: {sorted(references)}"
        order += free
        for table in free:
            del references[table]
    return order


async def run_against_model(store: StateStore, operations: list[tuple[object, ...]]) -> None:
    rows: Model = {}
    for number, (kind, *args) in enumerate(operations):
        if kind == "enqueue":
            await enqueue_into_model(store, rows, number, args)
        elif rows:
            await apply_to_model(store, rows, str(kind), args)
        for sink in ("x", "y"):
            for now in (None, 0.0, 1.0, 5.0):
                assert ids_of(await store.due(sink, now, 100)) == expected_due(rows, sink, now)


async def every_row(store: StateStore) -> dict[int, str]:
    """Every row's sink by id, pending or dead, as the public interface shows them."""
    rows = [*await store.backlog("x", None, 1000), *await store.backlog("y", None, 1000)]
    return {d.id: d.sink for d in [*rows, *await store.dead_letters()]}


async def enqueue_into_model(
    store: StateStore, rows: Model, number: int, args: list[object]
) -> None:
    session, sinks = f"KC{args[0]}", sorted(args[1])  # type: ignore[call-overload]
    before = await every_row(store)
    await enqueue(store, session, [make_event(session, number)], sinks, now=0.0)
    added = {rid: sink for rid, sink in (await every_row(store)).items() if rid not in before}
    assert sorted(added.values()) == sinks
    assert all(rid > max(before, default=0) for rid in added)  # ids only grow
    for rid, sink in added.items():
        rows[rid] = {"sink": sink, "session": session, "state": "pending", "next": 0.0}


async def apply_to_model(store: StateStore, rows: Model, kind: str, args: list[object]) -> None:
    """Apply one operation to the store and to the model, when it applies to the row."""
    rid = sorted(rows)[int(args[0]) % len(rows)]  # type: ignore[call-overload]
    row = rows[rid]
    if kind == "ack" and row["state"] == "pending":
        await store.ack([rid])
        del rows[rid]
    elif kind == "retry" and row["state"] == "pending":
        await store.retry_later(rid, next_attempt_at=float(args[1]), error="e", status=None)  # type: ignore[arg-type]
        row["next"] = args[1]
    elif kind == "dead" and row["state"] == "pending":
        await store.dead_letter(rid, error="e", status=None, now=1.0)
        row["state"] = "dead"
    elif kind == "requeue" and row["state"] == "dead":
        assert await store.requeue([rid], now=1.0) == 1
        row.update(state="pending", next=1.0)
    elif kind == "purge" and row["state"] == "dead":
        assert await store.purge([rid]) == 1
        del rows[rid]
