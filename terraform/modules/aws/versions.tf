terraform {
  required_version = ">= 1.5.7"

  required_providers {
    # Only the AWS provider: packages are built outside Terraform (scripts/package.sh), so
    # no archive/null/external, and names come from prefixes, so no random.
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.79, < 7.0"
    }
  }
}
