# Names and sizes of the billing deployment. Every variable that ends up in
# the service's environment says which BILLING_* variable it feeds (see
# gateway/settings.py for what each one means).

variable "project_id" {
  description = "Google Cloud project that holds every resource."
  type        = string
}

variable "region" {
  description = "Region for Cloud Run, the Spanner instance config, Artifact Registry and the archive bucket."
  type        = string
  default     = "europe-west1"
}

variable "service_name" {
  description = "Cloud Run service name; also the prefix of the other resource names."
  type        = string
  default     = "billing"
}

variable "image" {
  description = "Container image (REPOSITORY_URI/billing:TAG) for the first deploy; later deploys change it through Cloud Build (deploy/cloudbuild.yaml)."
  type        = string
}

# --- Cloud Run ---------------------------------------------------------------

variable "cpu" {
  description = "vCPUs per instance. Passed as BILLING_CPUS: the signer pool (1 thread and signing process per vCPU) and the account threads are sized by it."
  type        = number
  default     = 2
  validation {
    condition     = contains([1, 2, 4, 6, 8], var.cpu)
    error_message = "cpu must be one of Cloud Run's sizes: 1, 2, 4, 6 or 8."
  }
}

variable "memory" {
  description = "Memory per instance."
  type        = string
  default     = "2Gi"
}

variable "min_instances" {
  description = "Instances kept warm: the outbox relay and the reconciler run in the service, so keep at least one."
  type        = number
  default     = 1
}

variable "max_instances" {
  description = "Upper bound on instances (every instance shares the one Spanner ledger)."
  type        = number
  default     = 10
}

variable "admission_queue_max" {
  description = "BILLING_ADMISSION_QUEUE_MAX: charges in flight per instance before 429. Cloud Run's per-instance concurrency is set to the same number."
  type        = number
  default     = 1000
  validation {
    condition     = var.admission_queue_max >= 1 && var.admission_queue_max <= 1000
    error_message = "admission_queue_max must be between 1 and 1000 (Cloud Run's concurrency limit)."
  }
}

variable "customer_inflight_max" {
  description = "BILLING_CUSTOMER_INFLIGHT_MAX: charges in flight for one customer; 0 keeps the service default."
  type        = number
  default     = 0
}

variable "drain_timeout_s" {
  description = "BILLING_DRAIN_TIMEOUT_S: how long SIGTERM waits for in-flight requests. Cloud Run kills 10 s after SIGTERM, so stay below it."
  type        = number
  default     = 8
  validation {
    condition     = var.drain_timeout_s > 0 && var.drain_timeout_s < 10
    error_message = "drain_timeout_s must be below Cloud Run's 10 s shutdown grace period."
  }
}

variable "reconcile_interval_s" {
  description = "BILLING_RECONCILE_INTERVAL_S: seconds between reconciler rounds."
  type        = number
  default     = 60
}

variable "signing_alg" {
  description = "JWS algorithm of the receipt signing key in Cloud HSM: RS256 (RSA_SIGN_PKCS1_2048_SHA256) or ES256 (EC_SIGN_P256_SHA256). Fixed when the key is created."
  type        = string
  default     = "RS256"
  validation {
    condition     = contains(["RS256", "ES256"], var.signing_alg)
    error_message = "signing_alg must be RS256 or ES256."
  }
}

variable "signing_key_version" {
  description = "BILLING_SIGNING_KEY: the version of the Cloud KMS signing key the service signs with (1 is created with the key; raise it after adding a version to rotate)."
  type        = number
  default     = 1
}

variable "public_url" {
  description = "BILLING_PUBLIC_URL: the https origin clients reach (receipt_url links start with it). Empty: the service's deterministic run.app URL; set it when a custom domain or load balancer is in front."
  type        = string
  default     = ""
  validation {
    condition     = var.public_url == "" || can(regex("^https://[^/?#@]+(/[^?#]*[^/?#])?$", var.public_url))
    error_message = "public_url must be an https:// URL without a query or a final /."
  }
}

variable "log_level" {
  description = "BILLING_LOG_LEVEL."
  type        = string
  default     = "info"
}

variable "public" {
  description = "Let anyone reach the service (clients authenticate with API keys, Stripe with signatures). False: only principals granted roles/run.invoker."
  type        = bool
  default     = true
}

# --- Spanner (ledger of record) ---------------------------------------------

variable "spanner_instance" {
  description = "Spanner instance id."
  type        = string
  default     = "billing"
}

variable "spanner_database" {
  description = "Spanner database id; its schema is owned by `billing migrate`, not Terraform."
  type        = string
  default     = "ledger"
}

variable "spanner_config" {
  description = "Spanner instance config; empty means regional-REGION."
  type        = string
  default     = ""
}

variable "spanner_processing_units" {
  description = "Spanner compute capacity (100 processing units = 1/10 node)."
  type        = number
  default     = 100
}

# --- Firestore (receipt read model) -----------------------------------------

variable "firestore_database" {
  description = "Firestore database id."
  type        = string
  default     = "(default)"
}

variable "firestore_location" {
  description = "Firestore location; empty means the region."
  type        = string
  default     = ""
}

variable "firestore_collection" {
  description = "Collection holding one document per receipt."
  type        = string
  default     = "receipts"
}

# --- Pub/Sub (receipt broadcast) --------------------------------------------

variable "receipts_topic" {
  description = "Pub/Sub topic every committed receipt is published to (ordering key: customer id)."
  type        = string
  default     = "billing-receipts"
}

variable "receipt_subscriptions" {
  description = "Subscriptions created on the receipts topic, each with message ordering so a consumer sees one customer's receipts in chain order."
  type        = list(string)
  default     = ["billing-receipts-consumer"]
}

# --- Cloud Storage (receipt archive) ----------------------------------------

variable "archive_bucket" {
  description = "Globally unique name of the receipt archive bucket."
  type        = string
}

variable "archive_prefix" {
  description = "Object prefix for archived receipts inside the bucket."
  type        = string
  default     = "receipts"
}

variable "archive_retention_locked" {
  description = "Lock the 7-year retention policy. Irreversible: once locked, neither the policy nor the bucket can be removed early."
  type        = bool
  default     = false
}

# --- Stripe (optional) -------------------------------------------------------

variable "stripe_enabled" {
  description = "Mount the Stripe secret key and webhook secret (each needs a version in Secret Manager)."
  type        = bool
  default     = true
}

variable "stripe_plans" {
  description = "STRIPE_PLANS: JSON object lookup_key -> {max_bots, quota, policy}; empty for none."
  type        = string
  default     = ""
}

variable "stripe_trial_price_id" {
  description = "STRIPE_TRIAL_PRICE_ID."
  type        = string
  default     = ""
}

variable "stripe_checkout_price_id" {
  description = "STRIPE_CHECKOUT_PRICE_ID; empty falls back to the trial price."
  type        = string
  default     = ""
}

variable "stripe_checkout_success_url" {
  description = "STRIPE_CHECKOUT_SUCCESS_URL."
  type        = string
  default     = ""
}

variable "stripe_checkout_cancel_url" {
  description = "STRIPE_CHECKOUT_CANCEL_URL."
  type        = string
  default     = ""
}

variable "stripe_entitlement_id" {
  description = "STRIPE_ENTITLEMENT_ID: the entitlement a subscription grants; empty keeps the default."
  type        = string
  default     = ""
}

variable "portal_return_url" {
  description = "PORTAL_RETURN_URL: where the Stripe customer portal sends people back."
  type        = string
  default     = ""
}

variable "admin_api_url" {
  description = "ADMIN_API_URL: where entitlement changes are delivered; empty disables the Admin API relay."
  type        = string
  default     = ""
}

variable "optional_secrets" {
  description = "Extra secrets to create and mount: any of service-token (BILLING_SERVICE_TOKEN) and admin-api-token (ADMIN_API_TOKEN). Each needs a version before deploy."
  type        = set(string)
  default     = []
  validation {
    condition     = alltrue([for name in var.optional_secrets : contains(["service-token", "admin-api-token"], name)])
    error_message = "optional_secrets may only name service-token and admin-api-token."
  }
}
