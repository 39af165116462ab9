terraform {
  # 1.9 for validations that compare two variables (database options).
  required_version = ">= 1.9.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.79, < 7.0"
    }
  }

  # Add your backend here (e.g. backend "s3" with use_lockfile), then terraform init.
}
