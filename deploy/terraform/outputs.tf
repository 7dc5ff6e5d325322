output "service_url" {
  description = "HTTPS address of the billing service."
  value       = google_cloud_run_v2_service.billing.uri
}

output "image_repository" {
  description = "Artifact Registry address to push images to (append /billing:TAG)."
  value       = google_artifact_registry_repository.billing.registry_uri
}

output "store_url" {
  description = "BILLING_STORE of the service, also `billing migrate --store`."
  value       = local.store_url
}

output "migrate_job" {
  description = "Cloud Run job that runs `billing migrate`."
  value       = google_cloud_run_v2_job.migrate.name
}

output "deployer_service_account" {
  description = "Service account to pass to `gcloud builds submit --service-account`."
  value       = google_service_account.deployer.id
}

output "secrets" {
  description = "Secret Manager secrets that need a version before the first deploy."
  value       = sort([for secret in google_secret_manager_secret.billing : secret.secret_id])
}
