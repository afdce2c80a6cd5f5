"""Admission admin: forms require reason (and ticket) and save through the services, so each
change writes its AdmissionEvent; deletes and resumes are confirm-form actions."""
from __future__ import annotations

import pytest
from django.urls import reverse

from ledger.models import Source
from quotas.models import AdmissionEvent, CircuitBreaker, Pause, Quota, TenantShare

pytestmark = pytest.mark.django_db

QUOTA = {"tenant": "acme", "job_type": "scan", "source": "nvd", "max_active": "3",
         "rate_per_second": "2", "burst": "5", "max_queued": ""}


def test_quota_add_needs_reason_and_ticket(admin_client):
    response = admin_client.post(reverse("admin:quotas_quota_add"), QUOTA)
    assert response.status_code == 200  # the form again, with errors
    errors = response.context["adminform"].form.errors
    assert set(errors) >= {"reason", "ticket"}
    assert not Quota.objects.exists() and not AdmissionEvent.objects.exists()


def test_quota_add_and_change_go_through_the_service(admin_client):
    response = admin_client.post(reverse("admin:quotas_quota_add"),
                                 {**QUOTA, "reason": "NVD asked", "ticket": "OPS-1"})
    assert response.status_code == 302, response.context["adminform"].form.errors
    quota = Quota.objects.get()
    source = Source.objects.get(tenant="acme", name="nvd")
    assert (quota.tenant, quota.job_type, quota.source_id, quota.max_active, quota.burst) == (
        "acme", "scan", source.pk, 3, 5)
    assert quota.updated_by == "admin:admin"
    event = AdmissionEvent.objects.get()
    assert (event.type, event.actor_type, event.actor_label, event.ticket) == (
        "quota.changed", "operator", "admin:admin", "OPS-1")

    change = reverse("admin:quotas_quota_change", args=[quota.pk])
    page = admin_client.get(change)
    assert page.status_code == 200
    assert page.context["adminform"].form.initial["reason"] == ""  # each change states its own
    no_ticket = admin_client.post(change, {"max_active": "7", "rate_per_second": "2", "burst": "5",
                                           "max_queued": "", "reason": "more"})
    assert no_ticket.status_code == 200 and Quota.objects.get().max_active == 3
    done = admin_client.post(change, {"max_active": "7", "rate_per_second": "2", "burst": "5",
                                      "max_queued": "", "reason": "more", "ticket": "OPS-2"})
    assert done.status_code == 302 and Quota.objects.get().max_active == 7
    last = AdmissionEvent.objects.latest("id")
    assert last.data["before"]["max_active"] == 3 and last.data["after"]["max_active"] == 7


def test_quota_form_refuses_what_the_service_refuses(admin_client):
    for bad in ({"rate_per_second": "2", "burst": ""}, {"rate_per_second": "nan", "burst": "1"},
                {"max_active": "", "rate_per_second": "", "burst": ""},
                {"rate_per_second": "-1", "burst": "1"}):
        response = admin_client.post(reverse("admin:quotas_quota_add"),
                                     {**QUOTA, **bad, "reason": "r", "ticket": "t"})
        assert response.status_code == 200, bad
        assert response.context["adminform"].form.errors, bad  # re-displayed with the error
    assert not Quota.objects.exists() and not AdmissionEvent.objects.exists()


def test_quota_delete_is_an_action_with_reason_and_ticket(admin_client):
    admin_client.post(reverse("admin:quotas_quota_add"), {**QUOTA, "reason": "r", "ticket": "t"})
    quota = Quota.objects.get()
    changelist = reverse("admin:quotas_quota_changelist")
    confirm = admin_client.post(changelist, {"action": "delete_with_reason",
                                             "_selected_action": [quota.pk]})
    assert confirm.status_code == 200 and b"reason" in confirm.content
    missing = admin_client.post(changelist, {"action": "delete_with_reason", "apply": "1",
                                             "_selected_action": [quota.pk], "reason": "gone"})
    assert missing.status_code == 200 and Quota.objects.exists()
    done = admin_client.post(changelist, {"action": "delete_with_reason", "apply": "1",
                                          "_selected_action": [quota.pk], "reason": "gone",
                                          "ticket": "OPS-3"})
    assert done.status_code == 302 and not Quota.objects.exists()
    event = AdmissionEvent.objects.latest("id")
    assert (event.type, event.reason, event.ticket) == ("quota.deleted", "gone", "OPS-3")


def test_pause_add_needs_a_reason_and_resume_is_an_action(admin_client):
    add = reverse("admin:quotas_pause_add")
    body = {"tenant": "acme", "job_type": "", "source": "", "key": "ops"}
    assert admin_client.post(add, body).status_code == 200 and not Pause.objects.exists()
    assert admin_client.post(add, {**body, "reason": "freeze"}).status_code == 302
    admin_client.post(add, {**body, "key": "deploy", "reason": "deploy"})
    assert [e.type for e in AdmissionEvent.objects.order_by("id")] == ["tenant.paused"] * 2
    ops = Pause.objects.get(key="ops")
    done = admin_client.post(reverse("admin:quotas_pause_changelist"),
                             {"action": "resume", "apply": "1", "_selected_action": [ops.pk],
                              "reason": "thawed"})
    assert done.status_code == 302
    assert list(Pause.objects.values_list("key", flat=True)) == ["deploy"]
    event = AdmissionEvent.objects.latest("id")
    assert (event.type, event.data["keys"]) == ("tenant.resumed", ["deploy"])


def test_share_and_breaker_forms(admin_client):
    response = admin_client.post(reverse("admin:quotas_tenantshare_add"),
                                 {"tenant": "acme", "weight": "4", "reason": "big customer",
                                  "ticket": "OPS-4"})
    assert response.status_code == 302 and TenantShare.objects.get().weight == 4
    share = TenantShare.objects.get()
    no_reason = admin_client.post(reverse("admin:quotas_tenantshare_change", args=[share.pk]),
                                  {"weight": "8", "ticket": "OPS-5"})
    assert no_reason.status_code == 200 and TenantShare.objects.get().weight == 4
    assert "reason" in no_reason.context["adminform"].form.errors
    breaker_add = reverse("admin:quotas_circuitbreaker_add")
    body = {"tenant": "acme", "source": "nvd", "failure_ratio": "0.4", "window_seconds": "300",
            "min_samples": "10", "cooldown_seconds": "60", "reason": "flaky", "ticket": "OPS-6"}
    for bad, field in (({"failure_ratio": "2"}, "failure_ratio"), ({"source": ""}, "source")):
        response = admin_client.post(breaker_add, {**body, **bad})
        assert response.status_code == 200
        errors = response.context["adminform"].form.errors
        assert field in errors or "__all__" in errors, errors
    assert admin_client.post(breaker_add, body).status_code == 302
    breaker = CircuitBreaker.objects.get()
    assert (breaker.state, breaker.failure_ratio) == ("closed", 0.4)
    assert [e.type for e in AdmissionEvent.objects.order_by("id")] == ["share.changed",
                                                                       "breaker.configured"]


def test_admission_events_are_read_only_and_nothing_is_deleted_in_place(admin_client):
    assert admin_client.get(reverse("admin:quotas_admissionevent_changelist")).status_code == 200
    assert admin_client.get(reverse("admin:quotas_admissionevent_add")).status_code == 403
    admin_client.post(reverse("admin:quotas_pause_add"),
                      {"tenant": "acme", "key": "ops", "reason": "r"})
    pause = Pause.objects.get()
    assert admin_client.get(reverse("admin:quotas_pause_delete", args=[pause.pk])).status_code == 403


def test_every_admission_admin_page_renders(admin_client):
    admin_client.post(reverse("admin:quotas_quota_add"), {**QUOTA, "reason": "r", "ticket": "t"})
    admin_client.post(reverse("admin:quotas_pause_add"),
                      {"tenant": "acme", "source": "nvd", "key": "ops", "reason": "r"})
    admin_client.post(reverse("admin:quotas_tenantshare_add"),
                      {"tenant": "acme", "weight": "2", "reason": "r", "ticket": "t"})
    admin_client.post(reverse("admin:quotas_circuitbreaker_add"),
                      {"tenant": "acme", "source": "nvd", "failure_ratio": "0.5",
                       "window_seconds": "300", "min_samples": "10", "cooldown_seconds": "60",
                       "reason": "r", "ticket": "t"})
    for model, row in (("quota", Quota), ("pause", Pause), ("tenantshare", TenantShare),
                       ("circuitbreaker", CircuitBreaker), ("admissionevent", AdmissionEvent)):
        pk = row.objects.order_by("pk").values_list("pk", flat=True).first()
        assert pk is not None, model
        for url in (reverse(f"admin:quotas_{model}_changelist"),
                    reverse(f"admin:quotas_{model}_change", args=[pk])):
            response = admin_client.get(url)
            assert response.status_code == 200, url
        if model != "admissionevent":
            assert admin_client.get(reverse(f"admin:quotas_{model}_add")).status_code == 200
    page = admin_client.get(reverse("admin:quotas_quota_change", args=[Quota.objects.get().pk]))
    assert b"nvd" in page.content  # the source by name, read-only
