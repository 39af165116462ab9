module "ferry" {
  source = "../../modules/aws"

  name_prefix  = var.name_prefix
  package_dir  = var.package_dir
  architecture = var.architecture

  # RDS keeps only username and password in its master secret; the functions get the
  # rest from FERRY_DATABASE_HOST/PORT/NAME.
  database_secret_arn = var.create_database ? aws_db_instance.ferry[0].master_user_secret[0].secret_arn : var.database_secret_arn
  database_host       = var.create_database ? aws_db_instance.ferry[0].address : null
  database_port       = var.create_database ? aws_db_instance.ferry[0].port : null
  database_name       = var.create_database ? aws_db_instance.ferry[0].db_name : null
  # RDS for PostgreSQL 15+ refuses unencrypted connections (rds.force_ssl = 1).
  database_sslmode = var.create_database ? "require" : null
  kms_key_arn      = var.database_kms_key_arn

  # The webhook keyring is brought, like option (a) of the database: a secret the operator
  # creates from `ferry secrets new-key` output (README step 2). Not created here: a keyring
  # in a variable or a secret version would sit in the state, and a destroy of this root
  # would delete the keys that open every stored signing secret, which must outlive it.
  webhook_keys_secret_arn  = var.webhook_keys_secret_arn
  webhook_keys_kms_key_arn = var.webhook_keys_kms_key_arn

  vpc_config = length(var.function_subnet_ids) == 0 ? null : {
    subnet_ids         = var.function_subnet_ids
    security_group_ids = var.function_security_group_ids
  }

  # moto 5.2.5 does not return RedriveAllowPolicy, so the provider would wait for it forever.
  create_dlq_redrive_allow_policy = !local.emulated

  environment          = var.function_environment
  query_cors_origins   = var.query_cors_origins
  create_alarm_topic   = var.create_alarm_topic
  bucket_force_destroy = var.bucket_force_destroy
}

resource "aws_sns_topic_subscription" "alarm_email" {
  count = var.alarm_email != null && var.create_alarm_topic ? 1 : 0

  topic_arn = module.ferry.alarm_topic_arn
  protocol  = "email"
  endpoint  = var.alarm_email
}

# Option (b): a PostgreSQL instance for ferry. The migrations need the hll extension,
# which RDS for PostgreSQL ships (CREATE EXTENSION as the master user).

resource "aws_db_subnet_group" "ferry" {
  count = var.create_database ? 1 : 0

  name       = "${var.name_prefix}-db"
  subnet_ids = var.db_subnet_ids
}

resource "aws_db_instance" "ferry" {
  #checkov:skip=CKV2_AWS_30:Statement logging is a per-team parameter-group decision (and a cost); postgresql logs are exported.
  count = var.create_database ? 1 : 0

  identifier     = "${var.name_prefix}-db"
  engine         = "postgres"
  engine_version = var.db_engine_version
  instance_class = var.db_instance_class
  db_name        = "ferry"
  username       = "ferry"
  # RDS generates the password and keeps it in Secrets Manager (and rotates it); it never
  # passes through Terraform state.
  manage_master_user_password = true

  allocated_storage                   = var.db_allocated_storage
  storage_type                        = "gp3"
  storage_encrypted                   = true
  iam_database_authentication_enabled = true
  multi_az                            = var.db_multi_az
  db_subnet_group_name                = aws_db_subnet_group.ferry[0].name
  vpc_security_group_ids              = var.db_security_group_ids
  publicly_accessible                 = false

  backup_retention_period         = 7
  copy_tags_to_snapshot           = true
  deletion_protection             = var.db_deletion_protection
  final_snapshot_identifier       = "${var.name_prefix}-db-final"
  auto_minor_version_upgrade      = true
  enabled_cloudwatch_logs_exports = ["postgresql", "upgrade"]
  performance_insights_enabled    = true
}
