terraform {
  required_version = ">= 1.5"

  required_providers {
    google = {
      source = "hashicorp/google"
      # 6.x: Cloud Run v2 `deletion_protection`, Artifact Registry
      # `registry_uri`, Firestore `delete_protection_state`.
      version = ">= 6.14, < 7.0"
    }
  }

  # Keep state in a bucket of its own (not the receipt archive):
  #   terraform init -backend-config="bucket=STATE_BUCKET" -backend-config="prefix=billing"
  backend "gcs" {}
}

provider "google" {
  project = var.project_id
  region  = var.region
}
