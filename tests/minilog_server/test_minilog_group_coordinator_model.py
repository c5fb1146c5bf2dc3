"""The group coordinator alone (no network): random joins, syncs, leaves and clock ticks keep
Kafka's invariants — generations only grow, a completed join hands everyone the same generation
and leader, and a member's commit is accepted only in the current generation."""

import asyncio

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from clients.protocol.errors import BrokerError
from minilog.group_coordinator import (COMPLETING_REBALANCE, EMPTY, PREPARING_REBALANCE, STABLE,
                                       GroupCoordinator)

STATES = {EMPTY, PREPARING_REBALANCE, COMPLETING_REBALANCE, STABLE}


class GroupModel(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.coordinator = GroupCoordinator()
        self.clock = 0.0
        self.members = []          # member ids handed out
        self.pending_joins = {}    # member id or "new-N" -> future
        self.last_generation = 0
        self.new = 0

    def teardown(self):
        self.loop.close()

    def _run(self):
        self.loop.run_until_complete(asyncio.sleep(0))

    def _join(self, member_id):
        async def call():
            return self.coordinator.join("g", member_id, "c", 1000, 500, "consumer", [("range", b"m")])
        try:
            fut = self.loop.run_until_complete(call())
        except BrokerError:
            return
        self.pending_joins[member_id or f"new-{self.new}"] = fut
        self.new += 1

    @rule()
    def new_member_joins(self):
        self._join("")

    @rule(data=st.data())
    def known_member_rejoins(self, data):
        if self.members:
            self._join(data.draw(st.sampled_from(self.members)))

    @rule(data=st.data())
    def member_leaves(self, data):
        group = self.coordinator.groups.get("g")
        if group and group.members:
            self.coordinator.leave("g", data.draw(st.sampled_from(sorted(group.members))))

    @rule(ms=st.sampled_from([10, 300, 600, 1200]))
    def time_passes(self, ms):
        self.clock += ms
        # Members "heard from" are refreshed by the coordinator with the real clock; shift them instead.
        group = self.coordinator.groups.get("g")
        if group:
            for m in group.members.values():
                m.last_heard_ms -= ms
            group.rebalance_deadline_ms -= ms
        self.coordinator.tick()

    @rule()
    def leader_syncs(self):
        group = self.coordinator.groups.get("g")
        if group and group.state == COMPLETING_REBALANCE:
            async def call():
                return self.coordinator.sync("g", group.generation_id, group.leader_id,
                                             [[m, b"a"] for m in group.members])
            fut = self.loop.run_until_complete(call())
            assert fut.done() and fut.result() == {"assignment": b"a"}
            assert group.state == STABLE

    @invariant()
    def completed_joins_agree(self):
        self._run()
        done = {k: f for k, f in self.pending_joins.items() if f.done()}
        results = [f.result() for f in done.values() if not f.exception()]
        for r in results:
            if r["member_id"] not in self.members:
                self.members.append(r["member_id"])
        group = self.coordinator.groups.get("g")
        for r in results:
            assert r["generation_id"] <= group.generation_id
            assert (r["members"] != []) == (r["member_id"] == r["leader_id"])
        for k in done:
            del self.pending_joins[k]

    @invariant()
    def generations_only_grow_and_states_are_kafkas(self):
        group = self.coordinator.groups.get("g")
        if group is None:
            return
        assert group.state in STATES
        assert group.generation_id >= self.last_generation
        self.last_generation = group.generation_id
        if group.state in (COMPLETING_REBALANCE, STABLE):
            assert group.leader_id in group.members
        if group.state == EMPTY:
            assert not group.members

    @invariant()
    def commits_are_fenced_by_generation(self):
        group = self.coordinator.groups.get("g")
        if group is None or group.state != STABLE:
            return
        member = next(iter(group.members))
        self.coordinator.check_commit("g", group.generation_id, member)
        for stale in (group.generation_id - 1, group.generation_id + 1, -1):
            try:
                self.coordinator.check_commit("g", stale, member)
            except BrokerError as exc:
                assert exc.code == "ILLEGAL_GENERATION"
            else:
                raise AssertionError(f"commit with generation {stale} accepted in {group.generation_id}")


GroupModel.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestGroupModel = GroupModel.TestCase
