variable "region" {
  description = "AWS region to deploy into."
  type        = string
  default     = "eu-west-1"
}

variable "name_prefix" {
  description = "Prefix of every resource name, e.g. ferry-prod."
  type        = string
  default     = "ferry"
}

variable "package_dir" {
  description = "Where scripts/package.sh wrote the Lambda zips (relative to this directory, or absolute)."
  type        = string
  default     = "../../../dist/lambda"
}

variable "architecture" {
  description = "x86_64 (what scripts/package.sh builds) or arm64."
  type        = string
  default     = "x86_64"
}

variable "database_secret_arn" {
  description = "Option (a): an existing Secrets Manager secret with the database credentials (a postgres:// URL, or JSON with username, password, host, port, dbname). Leave null with create_database = true."
  type        = string
  default     = null
}

variable "database_kms_key_arn" {
  description = "Customer-managed KMS key of the database secret, if any (option a)."
  type        = string
  default     = null
}

variable "webhook_keys_secret_arn" {
  description = "Secrets Manager secret holding the webhook keyring (<key id>:<base64 of 32 bytes> entries, first one current), created before apply from `ferry secrets new-key` output (see README). Only fanout reads it."
  type        = string
}

variable "webhook_keys_kms_key_arn" {
  description = "Customer-managed KMS key of the webhook keyring secret, if any."
  type        = string
  default     = null
}

variable "create_database" {
  description = "Option (b): create an RDS PostgreSQL instance whose master password RDS keeps in Secrets Manager."
  type        = bool
  default     = false

  validation {
    condition     = var.create_database != (var.database_secret_arn != null)
    error_message = "Choose one database option: database_secret_arn (bring your own secret) or create_database = true."
  }
}

variable "db_subnet_ids" {
  description = "Private subnets (two or more availability zones) for the RDS instance (option b)."
  type        = list(string)
  default     = []

  validation {
    condition     = !var.create_database || length(var.db_subnet_ids) >= 2
    error_message = "create_database needs db_subnet_ids in at least two availability zones."
  }
}

variable "db_security_group_ids" {
  description = "Security groups of the RDS instance; allow 5432 from function_security_group_ids (option b)."
  type        = list(string)
  default     = []
}

variable "db_engine_version" {
  description = "PostgreSQL major version (15 or 16; both have the hll extension on RDS)."
  type        = string
  default     = "16"

  validation {
    condition     = contains(["15", "16"], var.db_engine_version)
    error_message = "db_engine_version must be \"15\" or \"16\"."
  }
}

variable "db_instance_class" {
  description = "RDS instance class."
  type        = string
  default     = "db.t4g.micro"
}

variable "db_allocated_storage" {
  description = "Storage in GiB (gp3)."
  type        = number
  default     = 20
}

variable "db_multi_az" {
  description = "Standby in a second availability zone (recommended for production)."
  type        = bool
  default     = false
}

variable "db_deletion_protection" {
  description = "Refuse to delete the database; set false (and apply) before terraform destroy."
  type        = bool
  default     = true
}

variable "function_subnet_ids" {
  description = "Subnets to run the functions in (needed to reach a database in a VPC). Empty: no VPC."
  type        = list(string)
  default     = []
}

variable "function_security_group_ids" {
  description = "Security groups of the functions when function_subnet_ids is set."
  type        = list(string)
  default     = []
}

variable "function_environment" {
  description = "Extra environment for every function (e.g. RUST_LOG, FERRY_DB_MAX_CONNECTIONS)."
  type        = map(string)
  default     = {}
}

variable "query_cors_origins" {
  description = "Origins a browser may call the query API from, e.g. [\"https://shop.example\"] (or [\"*\"]). Empty: no CORS headers."
  type        = list(string)
  default     = []
}

variable "create_alarm_topic" {
  description = "Create an SNS topic for the alarms."
  type        = bool
  default     = true
}

variable "alarm_email" {
  description = "Subscribe this address to the alarm topic (confirm the e-mail AWS sends). null: no subscription."
  type        = string
  default     = null
}

variable "bucket_force_destroy" {
  description = "Let terraform destroy empty the batch-file bucket."
  type        = bool
  default     = false
}

variable "aws_endpoint_url" {
  description = "Send every AWS call to this URL (an emulator such as moto server) instead of AWS. null: AWS."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags for every resource (through the provider's default_tags)."
  type        = map(string)
  default     = {}
}
