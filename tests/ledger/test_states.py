"""The transition table and the compare-and-set that enforces it."""
from __future__ import annotations

import pytest
from django.db import transaction

from ledger.clock import db_now
from ledger.models import Job, JobEvent
from ledger.services import Actor, job_transition
from ledger.states import TERMINAL, TRANSITIONS, IllegalTransition, JobStatus, require


def test_terminal_states_leave_only_by_replay():
    assert {TRANSITIONS[pair] for pair in TRANSITIONS if pair[0] in TERMINAL} == {"job.replayed"}
    assert {new for old, new in TRANSITIONS if old in TERMINAL} == {"ready", "blocked"}


def test_every_state_but_terminal_ones_can_be_canceled():
    for status in set(JobStatus.values) - TERMINAL:
        assert (status, JobStatus.CANCELED) in TRANSITIONS


@pytest.mark.parametrize("old,new", [
    ("succeeded", "leased"), ("dead_lettered", "scheduled"), ("canceled", "leased"),
    ("ready", "succeeded"), ("scheduled", "leased"), ("blocked", "leased"),
])
def test_illegal_transitions_are_refused(old, new):
    with pytest.raises(IllegalTransition):
        require(old, new)


@pytest.mark.django_db
def test_transition_is_compare_and_set_on_the_loaded_status(enqueue):
    job = enqueue()
    stale = Job.objects.get(pk=job.pk)
    Job.objects.filter(pk=job.pk).update(status=JobStatus.CANCELED)  # someone else got there
    with pytest.raises(IllegalTransition, match="changed concurrently"), transaction.atomic():
        job_transition(job=stale, to=JobStatus.CANCELED, actor=Actor.system(), now=db_now())
    assert not JobEvent.objects.filter(job=job, type="job.canceled").exists()


@pytest.mark.django_db
def test_transition_appends_its_event_in_the_same_transaction(enqueue):
    job = enqueue()
    with transaction.atomic():
        job_transition(job=job, to=JobStatus.CANCELED, actor=Actor.system("t"), now=db_now(),
                       reason="why")
    event = JobEvent.objects.filter(job=job).latest("id")
    assert (event.type, event.from_status, event.to_status, event.reason) == (
        "job.canceled", "ready", "canceled", "why")
    assert Job.objects.get(pk=job.pk).finished_at is not None
