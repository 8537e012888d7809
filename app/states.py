"""Provisor's vocabulary, declared once: the kinds of operation and every state machine.

**Operation kinds** (:data:`KINDS`): what each kind is called, the title of the task a
person gets for it, the service statuses it may start from, the status it leads to, whether
staff may request it and whether clients see it. ``Operation.KINDS``, the module operation
set, task titles, the API's action route, the OpenAPI summaries and the buttons on the
service page all come from this table: adding a kind touches this table and the modules
that implement it, nothing else.

**State machines** (:data:`OPERATION`, :data:`SERVICE`, :data:`TASK`, :data:`EMAIL`,
:data:`ITEM`, :data:`PROXY_OUTGOING`, :data:`DELIVERY`): the statuses of each and, per
action, the statuses the action may start from and the one it leads to. The services change
a status only through :meth:`Machine.move` (or use :meth:`Machine.sources` in a conditional
UPDATE, then :meth:`Machine.moved`), so these tables are the whole truth about what may
happen to a row. Each status change of a machine that ``emits`` (service, operation, task)
is an outgoing event ``<machine>.<status>`` (:data:`EVENT_TYPES`, ``app.services.events``).
"""

from dataclasses import dataclass, field

from app.services.errors import Conflict

# --- operation kinds --------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """One kind of operation."""

    name: str
    label: str  # a button or a column: "Suspend"
    task_title: str  # formatted with service, item, module
    summary: str  # what the API says of requesting it
    starts_from: tuple = ()  # service statuses it may be requested from
    leads_to: str | None = None  # the service status once it is done (None: unchanged)
    staff_may_request: bool = False  # offered on the service page and the API action route
    clients_see: bool = True  # shown in the client area while it runs
    on_item: bool = False  # an operation on an item, not on a service
    params: tuple = ()  # parameters a request must carry (e.g. tariff_id)
    confirm: str = ""  # destructive: the question asked before it is requested
    verb: str = ""  # "being suspended": what the client reads while it runs


KINDS = {
    kind.name: kind
    for kind in (
        Kind(
            "open",
            "Set up",
            "Set up service #{service} manually",
            "Set up a service (queued by its payment)",
            starts_from=(),
            leads_to="active",
            verb="being set up",
        ),
        Kind(
            "suspend",
            "Suspend",
            "Suspend service #{service} manually",
            "Suspend an active service",
            starts_from=("active",),
            leads_to="suspended",
            staff_may_request=True,
            verb="being suspended",
        ),
        Kind(
            "resume",
            "Resume",
            "Resume service #{service} manually",
            "Resume a suspended service",
            starts_from=("suspended",),
            leads_to="active",
            staff_may_request=True,
            verb="being resumed",
        ),
        Kind(
            "close",
            "Close",
            "Delete service #{service} manually",
            "Close (delete) a service",
            starts_from=("active", "suspended", "processing", "setup_cancelled"),
            leads_to="deleted",
            staff_may_request=True,
            confirm="Closing deletes service #{service} on its panel. This cannot be undone.",
            verb="being closed",
        ),
        Kind(
            "change_tariff",
            "Change tariff",
            "Change the tariff of service #{service} manually",
            "Move a service to another tariff of the same product type",
            starts_from=("active", "suspended"),
            staff_may_request=True,
            params=("tariff_id",),
            verb="moving to another tariff",
        ),
        Kind(
            "renew",
            "Renew",
            "Renew service #{service} manually",
            "Renew a service before it expires (certificates, domains)",
            starts_from=("active", "suspended"),
            staff_may_request=True,
            verb="being renewed",
        ),
        Kind(
            "ensure_item",
            "Create item",
            "Create item {item} on module {module} manually",
            "Create what a module needs to serve a tariff",
            clients_see=False,
            on_item=True,
        ),
    )
}

KIND_NAMES = tuple(KINDS)
REQUESTABLE = tuple(name for name, kind in KINDS.items() if kind.staff_may_request)


def task_title(op):
    """The title of the task a person gets for ``op``, in today's words."""
    kind = KINDS.get(op.kind)
    if kind is None:
        return f"Operation #{op.id}"
    return kind.task_title.format(
        service=op.service_id,
        item=op.item.internal_name if op.item_id else "",
        module=op.module.name if op.module_id else "",
    )


# --- state machines ---------------------------------------------------------------------


@dataclass
class Machine:
    """Statuses and transitions: ``transitions[action][source] = target`` (None: stays)."""

    name: str  # "operation": used in messages
    statuses: tuple
    final: tuple
    transitions: dict = field(default_factory=dict)
    verbs: dict = field(default_factory=dict)  # action -> "can be <verb>" in refusals
    # a status change is an outgoing event ``<name>.<status>`` (app.services.events)
    emits: bool = False

    def __post_init__(self):
        for action, moves in self.transitions.items():
            for source, target in moves.items():
                assert source in self.statuses, (self.name, action, source)
                assert target is None or target in self.statuses, (self.name, action, target)

    @property
    def open(self):
        """The statuses that are not final."""
        return tuple(s for s in self.statuses if s not in self.final)

    def sources(self, action):
        """The statuses ``action`` may start from."""
        return tuple(self.transitions[action])

    def allows(self, action, status):
        return status in self.transitions[action]

    def target(self, action, status):
        """Where ``action`` leads from ``status`` (the same status when it stays)."""
        moves = self.transitions[action]
        if status not in moves:
            raise Conflict(self.refusal(action, status))
        return moves[status] or status

    def refusal(self, action, status, subject=None):
        sources = ", ".join(self.sources(action))
        verb = self.verbs.get(action, action.replace("_", " "))
        article = "an" if self.name[0] in "aeiou" else "a"
        who = f"{self.name} {subject}" if subject is not None else f"the {self.name}"
        return f"{who} is {status}; only {article} {self.name} that is {sources} can be {verb}"

    def move(self, row, action, subject=None):
        """Set ``row.status`` to where ``action`` leads (Conflict if it may not); the
        caller saves the row. Returns the previous status."""
        moves = self.transitions[action]
        previous = row.status
        if previous not in moves:
            raise Conflict(self.refusal(action, previous, row.id if subject is None else subject))
        row.status = moves[previous] or previous
        if row.status != previous:
            self.moved(row, action, previous)
        return previous

    def moved(self, row, action, previous):
        """``row`` went from ``previous`` to ``row.status`` by ``action``: called by
        :meth:`move`, and by the services that change a status with a conditional UPDATE
        (its target from :meth:`target`). A machine that ``emits`` records the outgoing
        event in the caller's transaction (an outbox row: never lost, never sent for a
        change that rolls back)."""
        if self.emits and row.status != previous:
            from app.services import events

            events.moved(self, row, action, previous)

    @property
    def event_types(self):
        """The outgoing events of this machine: ``<name>.created`` and one per status."""
        if not self.emits:
            return ()
        return (f"{self.name}.created", *(f"{self.name}.{s}" for s in self.statuses))


def _from(sources, target):
    return dict.fromkeys(sources, target)


# queued → running → done, with retry_wait, polling, waiting_callback, waiting_task, manual
OPERATION = Machine(
    "operation",
    emits=True,
    statuses=(
        "queued",
        "running",
        "retry_wait",
        "polling",
        "waiting_callback",
        "waiting_task",
        "manual",
        "done",
        "cancelled",
    ),
    final=("done", "cancelled"),
    transitions={
        # a worker claims an attempt of an operation that is due
        "claim": _from(("queued", "retry_wait", "polling"), "running"),
        # what the module answered
        "done": _from(("running", "waiting_callback"), "done"),
        "pending": _from(("running",), "waiting_callback"),
        "poll": _from(("running",), "polling"),
        "to_people": _from(("running",), "waiting_task"),
        "retry": _from(("running", "waiting_callback"), "retry_wait"),
        # automation gives up: a task for people
        "escalate": _from(
            ("queued", "running", "retry_wait", "polling", "waiting_callback"), "manual"
        ),
        # the sweep: the worker of a running attempt died (its lease expired)
        "reclaim": _from(("running",), "queued"),
        # a worker asked to stop (a deploy) hands its running attempt back at once
        "hand_back": _from(("running",), "queued"),
        # people
        "restart": _from(
            ("queued", "retry_wait", "polling", "manual", "waiting_callback", "cancelled"),
            "queued",
        ),
        "cancel": _from(
            ("queued", "retry_wait", "polling", "manual", "waiting_callback", "waiting_task"),
            "cancelled",
        ),
        "take_over": {
            **_from(("queued", "retry_wait", "polling", "waiting_callback"), "manual"),
            **_from(("manual", "waiting_task"), None),
        },
        "complete": _from(
            ("queued", "retry_wait", "polling", "waiting_callback", "waiting_task", "manual"),
            "done",
        ),
        # a cancelled operation's task is reopened: people finish it
        "bring_back": _from(("cancelled",), "manual"),
        "bring_back_to_people": _from(("cancelled",), "waiting_task"),
    },
    verbs={
        "restart": "run now",
        "cancel": "cancelled",
        "take_over": "taken over",
        "complete": "completed by hand",
    },
)

# ordered → processing → active ⇄ suspended → deleted (ordered → active: imported); a
# setup cancelled by people waits in setup_cancelled (the reason kept) until staff retry it
# (processing again) or close it
SERVICE = Machine(
    "service",
    emits=True,
    statuses=("ordered", "processing", "setup_cancelled", "active", "suspended", "deleted"),
    final=("deleted",),
    transitions={
        "pay": _from(("ordered",), "processing"),
        "cancel_order": _from(("ordered",), "deleted"),
        # the open operation (or its task) was cancelled: the setup stops, not for ever
        "cancel_setup": _from(("processing",), "setup_cancelled"),
        # "Retry setup": a new open operation (or the cancelled one run or reopened again)
        "retry_setup": _from(("setup_cancelled",), "processing"),
        # staff bind an account that already exists on a panel: active at once, no open
        # operation runs (one is recorded as done, "imported by ...")
        "import": _from(("ordered",), "active"),
        # staff (or the API, or the scheduler) request an operation of a kind
        **{
            f"request_{name}": _from(kind.starts_from, None)
            for name, kind in KINDS.items()
            if kind.staff_may_request
        },
        # an operation of a kind is done
        **{
            f"done_{name}": _from(
                (
                    *(kind.starts_from or ("processing",)),
                    *((kind.leads_to,) if kind.leads_to else ()),
                ),
                kind.leads_to,
            )
            for name, kind in KINDS.items()
            if not kind.on_item
        },
    },
)

# new → in_work → closed / cancelled
TASK = Machine(
    "task",
    emits=True,
    statuses=("new", "in_work", "closed", "cancelled"),
    final=("closed", "cancelled"),
    transitions={
        "assign": _from(("new", "in_work"), "in_work"),
        "fill": _from(("new", "in_work"), None),
        "close": _from(("new", "in_work"), "closed"),
        "cancel": _from(("new", "in_work"), "cancelled"),
        "reopen": _from(("closed", "cancelled"), "new"),
        "reopen_assigned": _from(("closed", "cancelled"), "in_work"),
    },
    verbs={"assign": "assigned", "close": "closed", "cancel": "cancelled", "fill": "filled in"},
)

# queued → sending → sent, retry_wait on failure; outbox while there is no SMTP server
EMAIL = Machine(
    "email",
    statuses=("queued", "sending", "sent", "retry_wait", "outbox"),
    final=("sent",),
    transitions={
        "claim": _from(("queued", "retry_wait"), "sending"),
        "sent": _from(("sending",), "sent"),
        "fail": _from(("sending",), "retry_wait"),
        "reclaim": _from(("sending",), "retry_wait"),
        "park": _from(("queued", "retry_wait"), "outbox"),
        "release": _from(("outbox",), "queued"),
    },
)

# creating → ready; failed (automation gave up) or manual (a person must make it)
ITEM = Machine(
    "item",
    statuses=("creating", "ready", "failed", "manual"),
    final=(),
    transitions={
        "ensure": _from(("failed", "manual"), "creating"),
        # its settings changed (on the tariff): the module makes or checks it again
        "update": _from(("ready",), "creating"),
        "ready": _from(("creating", "failed", "manual", "ready"), "ready"),
        "fail": _from(("creating",), "failed"),
        "needs_person": _from(("creating",), "manual"),
    },
)

# a change of a forwarded task: pending until the peer took it; one the peer refused for
# good (a 4xx) is parked until staff retry or skip it
PROXY_OUTGOING = Machine(
    "proxy change",
    statuses=("pending", "sent", "parked", "skipped"),
    final=("sent", "skipped"),
    transitions={
        "sent": _from(("pending",), "sent"),
        "park": _from(("pending",), "parked"),
        "retry": _from(("parked",), "pending"),
        "skip": _from(("parked",), "skipped"),
    },
)

# an outgoing event to one webhook endpoint: pending → sending → delivered; a failure waits
# (retry_wait, a capped backoff) and is tried again, until EVENT_MAX_ATTEMPTS (failed)
DELIVERY = Machine(
    "delivery",
    statuses=("pending", "sending", "retry_wait", "delivered", "failed"),
    final=("delivered", "failed"),
    transitions={
        "claim": _from(("pending", "retry_wait"), "sending"),
        "delivered": _from(("sending",), "delivered"),
        "fail": _from(("sending",), "retry_wait"),
        "give_up": _from(("sending",), "failed"),
        "reclaim": _from(("sending",), "retry_wait"),
        # staff: "Retry now"
        "retry": _from(("pending", "retry_wait", "failed"), "pending"),
    },
    verbs={"retry": "retried"},
)

MACHINES = {m.name: m for m in (OPERATION, SERVICE, TASK, EMAIL, ITEM, PROXY_OUTGOING, DELIVERY)}

# every outgoing event (webhooks): a new status of a machine that emits is a new event
EVENT_TYPES = tuple(t for m in MACHINES.values() for t in m.event_types)
