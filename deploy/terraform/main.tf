# Vexa Billing on Google Cloud: Cloud Run service (gateway + supervision tree),
# Spanner (ledger of record), Firestore (receipt read model), Pub/Sub
# (receipt broadcast), Cloud Storage (7-year receipt archive), Cloud KMS with
# HSM protection (the receipt signing key), Secret Manager (tokens, Stripe
# secrets), and a Cloud Run job for
# `billing migrate`. Names of environment variables are the ones
# gateway/settings.py and gateway/stripe/settings.py read; tests/deploy checks it.

locals {
  spanner_config     = var.spanner_config != "" ? var.spanner_config : "regional-${var.region}"
  firestore_location = var.firestore_location != "" ? var.firestore_location : var.region

  # Seven years, leap days included: the same number as
  # ledger.gcs.RECEIPT_RETENTION_S (7 * 366 * 24 * 3600).
  receipt_retention_s = 221356800

  # The URLs the service parses (ledger/gcp_urls.py).
  store_url      = "spanner://projects/${var.project_id}/instances/${google_spanner_instance.billing.name}/databases/${google_spanner_database.ledger.name}"
  read_model_url = "firestore://projects/${var.project_id}/databases/${google_firestore_database.read_model.name}?collection=${var.firestore_collection}"
  broadcast_url  = "pubsub://projects/${var.project_id}/topics/${google_pubsub_topic.receipts.name}"
  archive_url    = "gs://${google_storage_bucket.archive.name}/${var.archive_prefix}"

  # The receipt signing key lives in Cloud HSM and never leaves it: the
  # service signs one checkpoint per commit with one asymmetricSign call.
  # Cloud KMS algorithm for each JWS alg receipts use (crypto/_kms.py).
  kms_algorithms = {
    RS256 = "RSA_SIGN_PKCS1_2048_SHA256"
    ES256 = "EC_SIGN_P256_SHA256"
  }
  signing_key_uri = "gcpkms://${google_kms_crypto_key.receipts.id}/cryptoKeyVersions/${var.signing_key_version}"

  # Secret Manager secret (name suffix) -> environment variable it feeds.
  secret_env = {
    "admin-token"           = "BILLING_ADMIN_TOKEN"
    "metrics-token"         = "BILLING_METRICS_TOKEN" # the Prometheus scraper's (monitoring/prometheus-scrape.yaml)
    "stripe-secret-key"     = "STRIPE_SECRET_KEY"
    "stripe-webhook-secret" = "STRIPE_WEBHOOK_SECRET" # several, comma-separated, during a rotation
    "service-token"         = "BILLING_SERVICE_TOKEN"
    "admin-api-token"       = "ADMIN_API_TOKEN"
  }
  mounted_env_secrets = setunion(
    ["admin-token", "metrics-token"],
    var.stripe_enabled ? ["stripe-secret-key", "stripe-webhook-secret"] : [],
    var.optional_secrets,
  )
  env_secrets  = { for name in local.mounted_env_secrets : name => local.secret_env[name] }
  secret_names = toset(keys(local.env_secrets))

  # Cloud Run's deterministic URL (service-projectnumber.region.run.app): the
  # request's own URL behind its proxy says http://, so receipt links use this.
  run_app_url = "https://${var.service_name}-${data.google_project.current.number}.${var.region}.run.app"
  public_url  = coalesce(var.public_url, local.run_app_url)

  # Plain environment of the service. An empty value means "the service
  # default" for every variable below.
  service_env = {
    BILLING_STORE                 = local.store_url
    BILLING_READ_MODEL            = local.read_model_url
    BILLING_BROADCAST             = local.broadcast_url
    BILLING_ARCHIVE               = local.archive_url
    BILLING_SIGNING_KEY           = local.signing_key_uri
    BILLING_ADMISSION_QUEUE_MAX   = tostring(var.admission_queue_max)
    BILLING_CUSTOMER_INFLIGHT_MAX = var.customer_inflight_max > 0 ? tostring(var.customer_inflight_max) : ""
    # os.cpu_count() sees the host's CPUs, not the instance's share: say it
    # (the signer pool and the account threads are sized per CPU).
    BILLING_CPUS                 = tostring(var.cpu)
    BILLING_DRAIN_TIMEOUT_S      = tostring(var.drain_timeout_s)
    BILLING_RECONCILE_INTERVAL_S = tostring(var.reconcile_interval_s)
    BILLING_LOG_LEVEL            = var.log_level
    BILLING_TRACE_PROJECT        = var.project_id
    BILLING_PUBLIC_URL           = local.public_url
    STRIPE_PLANS                 = var.stripe_plans
    STRIPE_TRIAL_PRICE_ID        = var.stripe_trial_price_id
    STRIPE_CHECKOUT_PRICE_ID     = var.stripe_checkout_price_id
    STRIPE_CHECKOUT_SUCCESS_URL  = var.stripe_checkout_success_url
    STRIPE_CHECKOUT_CANCEL_URL   = var.stripe_checkout_cancel_url
    STRIPE_ENTITLEMENT_ID        = var.stripe_entitlement_id
    PORTAL_RETURN_URL            = var.portal_return_url
    ADMIN_API_URL                = var.admin_api_url
  }
}

data "google_project" "current" {}

resource "google_project_service" "apis" {
  for_each = toset([
    "run.googleapis.com",
    "spanner.googleapis.com",
    "firestore.googleapis.com",
    "pubsub.googleapis.com",
    "storage.googleapis.com",
    "secretmanager.googleapis.com",
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "iam.googleapis.com",
    "cloudkms.googleapis.com",
  ])
  service            = each.value
  disable_on_destroy = false
}

# --- Images --------------------------------------------------------------------

resource "google_artifact_registry_repository" "billing" {
  location      = var.region
  repository_id = var.service_name
  format        = "DOCKER"
  description   = "Vexa Billing images, pushed by Cloud Build."
  depends_on    = [google_project_service.apis]

  # Keep the last 10 images (rollback targets) whatever their age; delete
  # untagged ones after 90 days. KEEP wins over DELETE.
  cleanup_policy_dry_run = false
  cleanup_policies {
    id     = "keep-last-10"
    action = "KEEP"
    most_recent_versions {
      keep_count = 10
    }
  }
  cleanup_policies {
    id     = "delete-untagged-after-90-days"
    action = "DELETE"
    condition {
      tag_state  = "UNTAGGED"
      older_than = "7776000s"
    }
  }
}

# --- Service accounts ------------------------------------------------------------

# The running service: reads and writes the ledger, never changes its schema.
resource "google_service_account" "runtime" {
  account_id   = "${var.service_name}-run"
  display_name = "Vexa Billing service (Cloud Run)"
}

# The migrate job: owns the Spanner schema, nothing else.
resource "google_service_account" "migrate" {
  account_id   = "${var.service_name}-migrate"
  display_name = "Vexa Billing schema migrations (Cloud Run job)"
}

# Cloud Build: pushes images, runs the migrate job, rolls the service.
resource "google_service_account" "deployer" {
  account_id   = "${var.service_name}-deploy"
  display_name = "Vexa Billing deployer (Cloud Build)"
}

# --- Spanner: ledger of record ---------------------------------------------------

resource "google_spanner_instance" "billing" {
  name             = var.spanner_instance
  config           = local.spanner_config
  display_name     = "Vexa Billing"
  processing_units = var.spanner_processing_units
  depends_on       = [google_project_service.apis]
}

resource "google_spanner_database" "ledger" {
  instance = google_spanner_instance.billing.name
  name     = var.spanner_database
  # No `ddl` here: the schema is `billing migrate`'s (ledger/spanner_schema.py),
  # applied by the migrate job, so Terraform never fights it.
  version_retention_period = "7d" # point-in-time recovery window for the ledger
  deletion_protection      = true
}

# Opening the ledger looks the instance and database up before using them
# (ledger/spanner_schema.py ensure_database); no predefined role grants just that.
resource "google_project_iam_custom_role" "spanner_locate" {
  role_id     = replace("${var.service_name}_spanner_locate", "-", "_")
  title       = "Vexa Billing: look up the Spanner instance and database"
  permissions = ["spanner.instances.get", "spanner.databases.get"]
}

resource "google_spanner_instance_iam_member" "locate" {
  for_each = {
    runtime = google_service_account.runtime.member
    migrate = google_service_account.migrate.member
  }
  instance = google_spanner_instance.billing.name
  role     = google_project_iam_custom_role.spanner_locate.id
  member   = each.value
}

resource "google_spanner_database_iam_member" "runtime" {
  instance = google_spanner_instance.billing.name
  database = google_spanner_database.ledger.name
  role     = "roles/spanner.databaseUser"
  member   = google_service_account.runtime.member
}

resource "google_spanner_database_iam_member" "migrate" {
  instance = google_spanner_instance.billing.name
  database = google_spanner_database.ledger.name
  role     = "roles/spanner.databaseAdmin"
  member   = google_service_account.migrate.member
}

# --- Firestore: receipt read model ---------------------------------------------

resource "google_firestore_database" "read_model" {
  name                    = var.firestore_database
  location_id             = local.firestore_location
  type                    = "FIRESTORE_NATIVE"
  delete_protection_state = "DELETE_PROTECTION_ENABLED"
  deletion_policy         = "ABANDON"
  depends_on              = [google_project_service.apis]
}

# GET /v1/receipts: where customer_id == C and seq > N order by seq
# (ledger/firestore.py list_receipts).
resource "google_firestore_index" "receipts_by_customer_seq" {
  database    = google_firestore_database.read_model.name
  collection  = var.firestore_collection
  query_scope = "COLLECTION"

  fields {
    field_path = "customer_id"
    order      = "ASCENDING"
  }
  fields {
    field_path = "seq"
    order      = "ASCENDING"
  }
}

# Firestore has no per-database IAM binding: grant at the project, limited
# to this one database by a condition.
resource "google_project_iam_member" "runtime_firestore" {
  project = var.project_id
  role    = "roles/datastore.user"
  member  = google_service_account.runtime.member
  condition {
    title      = "billing read model only"
    expression = "resource.name == \"projects/${var.project_id}/databases/${google_firestore_database.read_model.name}\""
  }
}

# --- Pub/Sub: receipt broadcast ----------------------------------------------------

resource "google_pubsub_topic" "receipts" {
  name                       = var.receipts_topic
  message_retention_duration = "604800s"
  depends_on                 = [google_project_service.apis]
}

resource "google_pubsub_subscription" "receipts" {
  for_each = toset(var.receipt_subscriptions)
  name     = each.value
  topic    = google_pubsub_topic.receipts.id

  # Messages carry ordering key = customer id: with ordering on, a consumer
  # gets one customer's receipts in chain order.
  enable_message_ordering    = true
  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"
  expiration_policy {
    ttl = "" # never expires while idle
  }
  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }
}

resource "google_pubsub_topic_iam_member" "runtime_publisher" {
  topic  = google_pubsub_topic.receipts.name
  role   = "roles/pubsub.publisher"
  member = google_service_account.runtime.member
}

# --- Cloud Storage: receipt archive ----------------------------------------------

resource "google_storage_bucket" "archive" {
  name                        = var.archive_bucket
  location                    = var.region
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  # Cloud Storage refuses deletes and overwrites of an archived receipt
  # until it is seven years old.
  retention_policy {
    retention_period = local.receipt_retention_s
    is_locked        = var.archive_retention_locked
  }

  # Receipts are read rarely after their first months.
  lifecycle_rule {
    condition {
      age = 365
    }
    action {
      type          = "SetStorageClass"
      storage_class = "ARCHIVE"
    }
  }

  depends_on = [google_project_service.apis]
}

# The archive looks the bucket up, creates objects (create-only), lists and
# reads them back for the reconciler: no delete, no bucket changes.
resource "google_storage_bucket_iam_member" "runtime_archive" {
  for_each = toset([
    "roles/storage.legacyBucketReader", # storage.buckets.get (lookup on open)
    "roles/storage.objectCreator",
    "roles/storage.objectViewer",
  ])
  bucket = google_storage_bucket.archive.name
  role   = each.value
  member = google_service_account.runtime.member
}

# --- Cloud KMS (Cloud HSM): the receipt signing key -----------------------------

resource "google_kms_key_ring" "billing" {
  name       = var.service_name
  location   = var.region
  depends_on = [google_project_service.apis]
}

# Version 1 is created with the key. Rotate by adding a version
# (`gcloud kms keys versions create`) and setting signing_key_version: the
# service keeps publishing every public key that ever signed, so older
# receipts and checkpoints keep verifying.
resource "google_kms_crypto_key" "receipts" {
  name     = "receipt-signing"
  key_ring = google_kms_key_ring.billing.id
  purpose  = "ASYMMETRIC_SIGN"

  version_template {
    algorithm        = local.kms_algorithms[var.signing_alg]
    protection_level = "HSM"
  }

  lifecycle {
    prevent_destroy = true # every receipt ever issued is verified with its public key
  }
}

# Sign and read the public key (the JWKS), nothing else: no key management.
resource "google_kms_crypto_key_iam_member" "runtime_signer" {
  crypto_key_id = google_kms_crypto_key.receipts.id
  role          = "roles/cloudkms.signerVerifier"
  member        = google_service_account.runtime.member
}

# --- Secret Manager --------------------------------------------------------------
# Terraform creates the secrets, never their values (values stay out of the
# state file): add each version with `gcloud secrets versions add`.

resource "google_secret_manager_secret" "billing" {
  for_each  = local.secret_names
  secret_id = "${var.service_name}-${each.value}"
  replication {
    auto {}
  }
  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret_iam_member" "runtime" {
  for_each  = local.secret_names
  secret_id = google_secret_manager_secret.billing[each.value].id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.runtime.member
}

# --- Cloud Run: the service ----------------------------------------------------

resource "google_cloud_run_v2_service" "billing" {
  name                = var.service_name
  location            = var.region
  ingress             = "INGRESS_TRAFFIC_ALL"
  deletion_protection = true

  template {
    service_account                  = google_service_account.runtime.email
    max_instance_request_concurrency = var.admission_queue_max
    # Shutdown: SIGTERM, then 10 s before SIGKILL; the drain fits inside.
    timeout = "60s"

    scaling {
      min_instance_count = var.min_instances
      max_instance_count = var.max_instances
    }

    containers {
      image = var.image

      ports {
        container_port = 8080 # passed to the container as PORT
      }

      resources {
        limits = {
          cpu    = tostring(var.cpu)
          memory = var.memory
        }
        # The outbox relay, reconciler and passivation run between requests:
        # CPU must stay allocated, not only while a request is being served.
        cpu_idle          = false
        startup_cpu_boost = true
      }

      dynamic "env" {
        for_each = local.service_env
        content {
          name  = env.key
          value = env.value
        }
      }

      dynamic "env" {
        for_each = local.env_secrets
        content {
          name = env.value
          value_source {
            secret_key_ref {
              secret  = google_secret_manager_secret.billing[env.key].secret_id
              version = "latest"
            }
          }
        }
      }

      # Ready = the supervision tree is up and the ledger is writable
      # (GET /readyz); traffic is sent only after that.
      startup_probe {
        http_get {
          path = "/readyz"
        }
        initial_delay_seconds = 2
        period_seconds        = 2
        timeout_seconds       = 2
        failure_threshold     = 60
      }

      # Liveness is the event loop answering; an integrity halt or a drain
      # makes /readyz fail but must not restart the instance (the operator
      # needs it, and a restart would not fix the ledger).
      liveness_probe {
        http_get {
          path = "/healthz"
        }
        period_seconds    = 10
        timeout_seconds   = 5
        failure_threshold = 3
      }
    }
  }

  lifecycle {
    # Cloud Build rolls out new images (deploy/cloudbuild.yaml).
    ignore_changes = [
      template[0].containers[0].image,
      client,
      client_version,
    ]
  }

  depends_on = [
    google_secret_manager_secret_iam_member.runtime,
    google_kms_crypto_key_iam_member.runtime_signer,
    google_spanner_database_iam_member.runtime,
    google_spanner_instance_iam_member.locate,
    google_project_iam_member.runtime_firestore,
    google_pubsub_topic_iam_member.runtime_publisher,
    google_storage_bucket_iam_member.runtime_archive,
    google_firestore_index.receipts_by_customer_seq,
  ]
}

resource "google_cloud_run_v2_service_iam_member" "public" {
  count    = var.public ? 1 : 0
  name     = google_cloud_run_v2_service.billing.name
  location = var.region
  role     = "roles/run.invoker"
  member   = "allUsers"
}

# --- Cloud Run: the schema migration job --------------------------------------

resource "google_cloud_run_v2_job" "migrate" {
  name                = "${var.service_name}-migrate"
  location            = var.region
  deletion_protection = false

  template {
    task_count  = 1
    parallelism = 1
    template {
      service_account = google_service_account.migrate.email
      max_retries     = 1 # migrations are idempotent: a retry finishes the job
      timeout         = "1800s"

      containers {
        image   = var.image
        command = ["billing"]
        args    = ["migrate", "--store", local.store_url]
      }
    }
  }

  lifecycle {
    ignore_changes = [
      template[0].template[0].containers[0].image,
      client,
      client_version,
    ]
  }

  depends_on = [
    google_spanner_database_iam_member.migrate,
    google_spanner_instance_iam_member.locate,
  ]
}

# --- Cloud Build deployer ---------------------------------------------------------

resource "google_artifact_registry_repository_iam_member" "deployer_push" {
  location   = google_artifact_registry_repository.billing.location
  repository = google_artifact_registry_repository.billing.name
  role       = "roles/artifactregistry.writer"
  member     = google_service_account.deployer.member
}

resource "google_project_iam_member" "deployer" {
  for_each = toset([
    "roles/run.developer",     # update the service and the job, execute the job
    "roles/logging.logWriter", # Cloud Build logs of a user-specified service account
  ])
  project = var.project_id
  role    = each.value
  member  = google_service_account.deployer.member
}

# Deploying a revision "acts as" its service account.
resource "google_service_account_iam_member" "deployer_acts_as" {
  for_each = {
    runtime = google_service_account.runtime.name
    migrate = google_service_account.migrate.name
  }
  service_account_id = each.value
  role               = "roles/iam.serviceAccountUser"
  member             = google_service_account.deployer.member
}
