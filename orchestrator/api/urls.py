"""Routes of the v1 API (bridge + operator)."""
from django.urls import path

from . import admission, dag, jobs, leases, schedules

urlpatterns = [
    path("jobs", jobs.JobCollectionApi.as_view(), name="jobs"),
    path("jobs/<int:job_id>", jobs.JobDetailApi.as_view(), name="job-detail"),
    path("jobs/<int:job_id>/cancel", jobs.JobCancelApi.as_view(), name="job-cancel"),
    path("jobs/<int:job_id>/events", jobs.JobEventsApi.as_view(), name="job-events"),
    path("runs", jobs.RunCollectionApi.as_view(), name="runs"),
    # Dependency chains (docs/dependencies.md)
    path("runs/submit", dag.RunSubmitApi.as_view(), name="run-submit"),
    path("jobs/<int:job_id>/replay", dag.JobReplayApi.as_view(), name="job-replay"),
    path("runs/<int:run_id>", jobs.RunDetailApi.as_view(), name="run-detail"),
    path("claims", leases.LeaseClaimApi.as_view(), name="claims"),
    path("acks", leases.LeaseBatchAckApi.as_view(), name="acks"),
    path("leases/<uuid:lease_id>/heartbeat", leases.LeaseHeartbeatApi.as_view(), name="lease-heartbeat"),
    path("leases/<uuid:lease_id>/ack", leases.LeaseAckApi.as_view(), name="lease-ack"),
    path("leases/<uuid:lease_id>/fail", leases.LeaseFailApi.as_view(), name="lease-fail"),
    path("leases/<uuid:lease_id>/release", leases.LeaseReleaseApi.as_view(), name="lease-release"),
    path("leases/<uuid:lease_id>/logs", leases.LeaseLogsApi.as_view(), name="lease-logs"),
    path("runner-config", leases.RunnerConfigApi.as_view(), name="runner-config"),
    # Recurring schedules (docs/schedules.md)
    path("schedules", schedules.ScheduleCollectionApi.as_view(), name="schedules"),
    path("schedules/preview", schedules.SchedulePreviewUnsavedApi.as_view(),
         name="schedule-preview-unsaved"),
    path("schedules/<int:schedule_id>", schedules.ScheduleDetailApi.as_view(),
         name="schedule-detail"),
    path("schedules/<int:schedule_id>/preview", schedules.SchedulePreviewApi.as_view(),
         name="schedule-preview"),
    # Admission control (docs/admission-operations.md)
    path("admission", admission.AdmissionStateApi.as_view(), name="admission"),
    path("admission/events", admission.AdmissionEventsApi.as_view(), name="admission-events"),
    path("quotas", admission.QuotaCollectionApi.as_view(), name="quotas"),
    path("throttles", admission.ThrottleApi.as_view(), name="throttles"),
    path("pauses", admission.PauseCollectionApi.as_view(), name="pauses"),
    path("pauses/resume", admission.PauseResumeApi.as_view(), name="pauses-resume"),
    path("tenant-share", admission.TenantShareApi.as_view(), name="tenant-share"),
    path("breakers", admission.BreakerCollectionApi.as_view(), name="breakers"),
    path("sources/<path:name>/breaker", admission.SourceBreakerApi.as_view(), name="source-breaker"),
]
