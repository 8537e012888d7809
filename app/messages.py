"""Texts Provisor writes into task histories, kept as a key and its arguments.

A history entry stores ``message`` (a key below) and ``args`` (ids, names, numbers); the
English sentence is made when it is shown (:func:`render`), so that a translation only
needs this catalogue, never the stored rows. Free text that people write (comments,
cancellation reasons) is stored as it is.

Reasons (why an operation went to people) are values of :class:`Reason`: a key of
:data:`REASONS` and its arguments; ``str(reason)`` is the English text.
"""

import logging

log = logging.getLogger(__name__)

MESSAGES = {
    # operations and their tasks
    "task_created": "Operation #{operation} ({kind}): {reason}.",
    "operation_note": "Operation #{operation}: {reason}.",
    "completed_by": "Operation #{operation} completed by {actor}.",
    "completed_automatically": "Operation #{operation} completed automatically; task closed.",
    "cancelled_by": "Operation #{operation} cancelled by {actor}.",
    "ran_again": "{actor} ran the operation again.",
    # people on tasks
    "assigned": "Assigned to {name}.",
    "planned": "Priority {priority}, due {due}.",
    "closed_with_fields": "Closed with the detail fields.",
    "fields_filled": "Detail fields filled in: {names}.",
    "details_corrected": "Service details corrected.",
    "reopened": "Reopened.",
    "cancelled": "Cancelled.",
    # the tasks proxy
    "received_from": "Received from {login}.",
    "fields_filled_remotely": "Detail fields filled in remotely.",
    "cancelled_remotely": "Cancelled remotely.",
    "closed_remotely_missing": "Closed remotely, but these fields are missing here: {missing}.",
    "close_refused_missing": "The sender closed this task, but it cannot be closed here: "
    "{missing} missing. The sender was told; fill them in and close it here.",
    "closed_remotely_invalid": "Closed remotely, but not here: {problems}.",
    "close_refused_invalid": "The sender closed this task, but it cannot be closed here: "
    "{problems}. The sender was told.",
}

REASONS = {
    "failed_attempts": "failed {n} attempt{s}",
    "permanent_error": "permanent error",
    "interrupted": "interrupted after {n} attempts",
    "no_module": "no processing module",
    "unknown_type": "unknown module type {type!r}",
    "module_disabled": "module {module} is disabled",
    "no_module_for_tariff": "no enabled module serves this tariff",
    "unsupported": "module {module} does not do {kind}",
    "people_do_it": "the manual setup module leaves it to people",
    "taken_over": "taken over by {actor}",
    "cannot_create_items": "{module_type} cannot create items automatically; create it by hand",
    "max_wait": "no result after waiting {seconds} s for the panel (max_wait)",
    "deadline": "the module's call ran past its deadline of {seconds} s (the module's "
    "timeout) and was stopped",
}


class Reason:
    """Why an operation went to people: a key of :data:`REASONS` and its arguments."""

    def __init__(self, key, **args):
        if key not in REASONS:
            raise KeyError(key)
        self.key = key
        self.args = args

    def as_args(self):
        return {"reason": self.key, "reason_args": self.args}

    def __str__(self):
        args = self.args
        if "kind" in args:
            args = {**args, "kind": kind_label(args["kind"])}
        return _format(REASONS[self.key], args)

    def __repr__(self):
        return f"Reason({self.key!r}, {self.args!r})"


def failed_attempts(n):
    return Reason("failed_attempts", n=n, s="s" if n != 1 else "")


def _format(template, args):
    try:
        return template.format(**args)
    except (KeyError, IndexError, ValueError):
        log.warning("cannot format %r with %r", template, args)
        return template


def render(message, args):
    """The English text of a stored history entry."""
    args = dict(args or {})
    if "reason" in args:
        key = args.pop("reason")
        reason_args = args.pop("reason_args", {}) or {}
        if "kind" in reason_args:
            reason_args = {**reason_args, "kind": kind_label(reason_args["kind"])}
        args["reason"] = _format(REASONS[key], reason_args) if key in REASONS else key
    if "kind" in args:  # a kind reads as its label ("Set up"), never as a status ("open")
        args["kind"] = kind_label(args["kind"])
    template = MESSAGES.get(message)
    if template is None:
        return message
    return _format(template, args)


def kind_label(name):
    """What people read for an operation kind: its label in the kinds table ("open" is
    "Set up"); an unknown kind as it is, without underscores."""
    from app.states import KINDS

    kind = KINDS.get(name)
    return kind.label if kind is not None else str(name or "").replace("_", " ")
