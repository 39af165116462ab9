locals {
  # An emulator (moto server in the tests) answers every service on one URL.
  emulated = var.aws_endpoint_url != null
}

provider "aws" {
  region = var.region

  default_tags {
    tags = merge({ app = "ferry", managed-by = "terraform" }, var.tags)
  }

  skip_credentials_validation = local.emulated
  skip_requesting_account_id  = local.emulated
  skip_metadata_api_check     = local.emulated
  s3_use_path_style           = local.emulated

  # Every service this configuration calls; null endpoints are AWS's own.
  endpoints {
    cloudwatch     = var.aws_endpoint_url
    ec2            = var.aws_endpoint_url
    iam            = var.aws_endpoint_url
    kms            = var.aws_endpoint_url
    lambda         = var.aws_endpoint_url
    logs           = var.aws_endpoint_url
    rds            = var.aws_endpoint_url
    s3             = var.aws_endpoint_url
    scheduler      = var.aws_endpoint_url
    secretsmanager = var.aws_endpoint_url
    sns            = var.aws_endpoint_url
    sqs            = var.aws_endpoint_url
    sts            = var.aws_endpoint_url
  }
}
