"""Routes of the v1 API (bridge + operator)."""
from django.urls import path

from . import jobs, leases

urlpatterns = [
    path("jobs", jobs.JobCollectionApi.as_view(), name="jobs"),
    path("jobs/<int:job_id>", jobs.JobDetailApi.as_view(), name="job-detail"),
    path("jobs/<int:job_id>/cancel", jobs.JobCancelApi.as_view(), name="job-cancel"),
    path("jobs/<int:job_id>/events", jobs.JobEventsApi.as_view(), name="job-events"),
    path("runs", jobs.RunCollectionApi.as_view(), name="runs"),
    path("runs/<int:run_id>", jobs.RunDetailApi.as_view(), name="run-detail"),
    path("claims", leases.LeaseClaimApi.as_view(), name="claims"),
    path("acks", leases.LeaseBatchAckApi.as_view(), name="acks"),
    path("leases/<uuid:lease_id>/heartbeat", leases.LeaseHeartbeatApi.as_view(), name="lease-heartbeat"),
    path("leases/<uuid:lease_id>/ack", leases.LeaseAckApi.as_view(), name="lease-ack"),
    path("leases/<uuid:lease_id>/fail", leases.LeaseFailApi.as_view(), name="lease-fail"),
    path("leases/<uuid:lease_id>/release", leases.LeaseReleaseApi.as_view(), name="lease-release"),
    path("leases/<uuid:lease_id>/logs", leases.LeaseLogsApi.as_view(), name="lease-logs"),
    path("runner-config", leases.RunnerConfigApi.as_view(), name="runner-config"),
]
