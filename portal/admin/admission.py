"""Admin for admission control: quotas, pause keys, tenant shares and breakers are edited
through forms that require a reason (and a ticket, except for pauses) and save through the
same services as the API, so every change appends its ``AdmissionEvent``. Deleting a quota
and resuming a pause are actions with a confirm form. Admission events are read-only.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from ledger.clock import db_now
from ledger.models import ActorType, Source
from ledger.services import Actor
from orchestrator.admission_ops import in_scope
from orchestrator.tokens import TENANT_RE
from quotas.audit import REASON_MAX, TICKET_MAX, check_why
from quotas.exceptions import AdmissionError
from quotas.models import AdmissionEvent, CircuitBreaker, Pause, Quota, TenantShare
from quotas.services import (
    BreakerConfig,
    Limits,
    breaker_configure,
    pause_add,
    pause_remove,
    quota_delete,
    quota_set,
    share_set_weight,
)


def _valid_name(value: str) -> bool:
    """``value`` matches the API's name pattern (job types, sources)."""
    # Imported late: orchestrator.api loads DRF, whose settings import our auth module, which
    # imports DRF's views: importing it during admin autodiscovery would be circular.
    from orchestrator.api.serializers import NAME_RE

    return re.match(NAME_RE, value) is not None


def _actor(request: HttpRequest) -> Actor:
    return Actor(ActorType.OPERATOR, f"admin:{request.user.get_username()}")


def _source_name(source_id: int) -> str:
    if not source_id:
        return "(every source)"
    return Source.objects.filter(pk=source_id).values_list("name", flat=True).first() or str(source_id)


def _adopt(obj: models.Model, row: models.Model) -> None:
    """Make the admin's ``obj`` the row the service stored (for the log entry and redirect)."""
    for f in type(row)._meta.concrete_fields:
        setattr(obj, f.attname, getattr(row, f.attname))


class WhyForm(forms.ModelForm):
    """A reason and a ticket for every save (blank on each form: a change states its own),
    plus a ``check`` hook that runs the service's validation so a save cannot fail."""

    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), max_length=REASON_MAX,
                             help_text="why (kept in the admission event)")
    ticket = forms.CharField(max_length=TICKET_MAX, help_text="change ticket, e.g. OPS-123")
    source = forms.CharField(required=False, max_length=100,
                             help_text="a source name; blank = every source")
    ticket_required = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.initial["reason"] = self.initial["ticket"] = ""
        if "ticket" in self.fields:
            self.fields["ticket"].required = self.ticket_required

    def clean_tenant(self) -> str:
        tenant = self.cleaned_data["tenant"]
        if not TENANT_RE.match(tenant):
            raise forms.ValidationError("letters, digits, '.', '_', '-' (1 to 64)")
        return tenant

    def clean_job_type(self) -> str:
        job_type = self.cleaned_data["job_type"]
        if job_type and not _valid_name(job_type):
            raise forms.ValidationError("not a valid job type name")
        return job_type

    def clean_source(self) -> str | None:
        source = self.cleaned_data.get("source") or None
        if source and not _valid_name(source):
            raise forms.ValidationError("not a valid source name")
        return source

    def check(self, data: dict[str, Any]) -> None:
        """Raise the service's ``AdmissionError`` for values it would refuse."""

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if self.errors:
            return data
        try:
            check_why(data.get("reason", ""), data.get("ticket", ""),
                      ticket_required=self.ticket_required)
            self.check(data)
        except AdmissionError as exc:
            fields = exc.details.get("fields") or {exc.details.get("field"): [exc.message]}
            for name, problems in fields.items():
                self.add_error(name if name in self.fields else None, problems)
        return data


class AdmissionAdmin(admin.ModelAdmin):
    """Add and change call a service (``save_via``); nothing is deleted in place; scope fields
    are fixed once the row exists."""

    form = WhyForm
    scope_fields: tuple[str, ...] = ()
    show_full_result_count = False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return (*self.readonly_fields, *(self.scope_fields if obj is not None else ()))

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # The source is a name on the add form and read-only (``source_name``) once stored.
        hidden = "source" if obj is not None else "source_name"
        return [f for f in super().get_fields(request, obj) if f != hidden]

    @admin.display(description="source")
    def source_name(self, obj: Any) -> str:
        return _source_name(obj.source_id)

    def save_via(self, request: HttpRequest, obj: Any, data: dict[str, Any],
                 change: bool) -> models.Model:
        raise NotImplementedError

    def save_model(self, request: HttpRequest, obj: Any, form: forms.ModelForm,
                   change: bool) -> None:
        _adopt(obj, self.save_via(request, obj, form.cleaned_data, change))

    def _scoped(self, service: Callable[..., Any], request: HttpRequest, obj: Any,
                data: dict[str, Any], change: bool, **kwargs: Any) -> Any:
        """Call ``service`` on the row's scope (on add, the form's: the source by name,
        created on first use as the API does); ``kwargs`` go to the service."""
        kwargs.update(actor=_actor(request), reason=data["reason"], ticket=data.get("ticket", ""))
        if change:
            return service(tenant=obj.tenant, source_id=obj.source_id, now=db_now(), **kwargs)
        return in_scope(lambda **kw: service(**kw, **kwargs), tenant=data["tenant"],
                        source=data.get("source"), create=True, with_job_type=False)


class ConfirmForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), max_length=REASON_MAX)
    ticket = forms.CharField(max_length=TICKET_MAX)


def _confirm(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Any], *,
             title: str, action: str, ticket_required: bool,
             apply: Callable[[Any, dict[str, str]], None]) -> HttpResponse | None:
    """An action's confirm page; on a valid submit, ``apply(row, form data)`` to each row."""
    form = ConfirmForm(request.POST if "apply" in request.POST else None)
    form.fields["ticket"].required = ticket_required
    if form.is_bound and form.is_valid():
        done = 0
        for row in queryset:
            try:
                apply(row, form.cleaned_data)
                done += 1
            except AdmissionError as exc:
                modeladmin.message_user(request, f"{row}: {exc.message}", messages.ERROR)
        modeladmin.message_user(request, f"{title}: {done} done.", messages.SUCCESS)
        return None
    return TemplateResponse(request, "admin/quotas/confirm_action.html", {
        **modeladmin.admin_site.each_context(request), "title": title, "form": form,
        "queryset": queryset, "action": action, "opts": modeladmin.model._meta})


class QuotaForm(WhyForm):
    class Meta:
        model = Quota
        fields = ["tenant", "job_type", "max_active", "rate_per_second", "burst", "max_queued"]

    def check(self, data: dict[str, Any]) -> None:
        limits = Limits(data.get("max_active"), data.get("rate_per_second"), data.get("burst"),
                        data.get("max_queued"))
        limits.check()
        if limits == Limits():
            self.add_error(None, "set at least one limit (delete the quota to lift all)")


@admin.register(Quota)
class QuotaAdmin(AdmissionAdmin):
    form = QuotaForm
    fields = ["tenant", "job_type", "source", "source_name", "max_active", "rate_per_second",
              "burst", "max_queued", "reason", "ticket"]
    readonly_fields = ("source_name",)
    scope_fields = ("tenant", "job_type")
    list_display = ("tenant", "job_type", "source_name", "max_active", "rate_per_second", "burst",
                    "max_queued", "updated_by", "updated_at")
    list_filter = ("tenant",)
    actions = ["delete_with_reason"]

    def save_via(self, request: HttpRequest, obj: Any, data: dict[str, Any],
                 change: bool) -> models.Model:
        limits = Limits(data["max_active"], data["rate_per_second"], data["burst"],
                        data["max_queued"])
        job_type = obj.job_type if change else data["job_type"]
        return self._scoped(quota_set, request, obj, data, change, job_type=job_type,
                            limits=limits)

    @admin.action(description="Delete selected quotas (reason and ticket)", permissions=["change"])
    def delete_with_reason(self, request: HttpRequest,
                           queryset: QuerySet[Quota]) -> HttpResponse | None:
        def apply(quota: Quota, why: dict[str, str]) -> None:
            quota_delete(tenant=quota.tenant, job_type=quota.job_type, source_id=quota.source_id,
                         actor=_actor(request), now=db_now(), **why)

        return _confirm(self, request, queryset, title="Delete quotas",
                        action="delete_with_reason", ticket_required=True, apply=apply)


class PauseForm(WhyForm):
    ticket_required = False

    class Meta:
        model = Pause
        fields = ["tenant", "job_type", "key"]


@admin.register(Pause)
class PauseAdmin(AdmissionAdmin):
    form = PauseForm
    fields = ["tenant", "job_type", "source", "source_name", "key", "reason", "ticket", "actor",
              "created_at"]
    readonly_fields = ("source_name", "actor", "created_at")
    scope_fields = ("tenant", "job_type", "key")
    list_display = ("tenant", "job_type", "source_name", "key", "reason", "ticket", "actor",
                    "created_at")
    list_filter = ("tenant", "key")
    actions = ["resume"]

    def save_via(self, request: HttpRequest, obj: Any, data: dict[str, Any],
                 change: bool) -> models.Model:
        job_type = obj.job_type if change else data["job_type"]
        key = obj.key if change else data["key"]
        pause, _ = self._scoped(pause_add, request, obj, data, change, job_type=job_type, key=key)
        return pause

    @admin.action(description="Resume: remove the selected pause keys (reason)",
                  permissions=["change"])
    def resume(self, request: HttpRequest, queryset: QuerySet[Pause]) -> HttpResponse | None:
        def apply(pause: Pause, why: dict[str, str]) -> None:
            pause_remove(tenant=pause.tenant, job_type=pause.job_type, source_id=pause.source_id,
                         key=pause.key, actor=_actor(request), now=db_now(), **why)

        return _confirm(self, request, queryset, title="Resume pauses", action="resume",
                        ticket_required=False, apply=apply)


class ShareForm(WhyForm):
    class Meta:
        model = TenantShare
        fields = ["tenant", "weight"]


@admin.register(TenantShare)
class TenantShareAdmin(AdmissionAdmin):
    form = ShareForm
    fields = ["tenant", "weight", "served_seq", "reason", "ticket"]
    readonly_fields = ("served_seq",)
    scope_fields = ("tenant",)
    list_display = ("tenant", "weight", "served_seq")

    def save_via(self, request: HttpRequest, obj: Any, data: dict[str, Any],
                 change: bool) -> models.Model:
        return share_set_weight(tenant=obj.tenant if change else data["tenant"],
                                weight=data["weight"], actor=_actor(request),
                                reason=data["reason"], ticket=data["ticket"], now=db_now())


class BreakerForm(WhyForm):
    class Meta:
        model = CircuitBreaker
        fields = ["tenant", "failure_ratio", "window_seconds", "min_samples", "cooldown_seconds"]

    def clean_source(self) -> str | None:
        source = super().clean_source()
        if source is None and self.instance.pk is None:
            raise forms.ValidationError("a breaker belongs to one source")
        return source

    def check(self, data: dict[str, Any]) -> None:
        BreakerConfig(**{k: data.get(k) for k in BREAKER_FIELDS}).check()


BREAKER_FIELDS = ("failure_ratio", "window_seconds", "min_samples", "cooldown_seconds")


@admin.register(CircuitBreaker)
class CircuitBreakerAdmin(AdmissionAdmin):
    form = BreakerForm
    fields = ["tenant", "source", "source_name", *BREAKER_FIELDS, "state", "opened_at",
              "probe_job_id", "changed_at", "reason", "ticket"]
    readonly_fields = ("source_name", "state", "opened_at", "probe_job_id", "changed_at")
    scope_fields = ("tenant",)
    list_display = ("tenant", "source_name", "state", "failure_ratio", "window_seconds",
                    "min_samples", "cooldown_seconds", "opened_at", "changed_at")
    list_filter = ("state", "tenant")

    def save_via(self, request: HttpRequest, obj: Any, data: dict[str, Any],
                 change: bool) -> models.Model:
        config = BreakerConfig(**{k: data[k] for k in BREAKER_FIELDS})
        return self._scoped(breaker_configure, request, obj, data, change, config=config)


@admin.register(AdmissionEvent)
class AdmissionEventAdmin(admin.ModelAdmin):
    """The admission log: append-only, so read-only here."""

    list_display = ("id", "tenant", "type", "job_type", "source_id", "actor_type", "actor_label",
                    "ticket", "occurred_at")
    list_filter = ("type", "tenant", "actor_type")
    search_fields = ("=ticket", "actor_label")
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
