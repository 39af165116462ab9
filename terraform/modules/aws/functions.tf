resource "aws_cloudwatch_log_group" "fn" {
  #checkov:skip=CKV_AWS_158:Logs carry no secrets (ferry never logs them); the AWS-owned key encrypts them at rest.
  #checkov:skip=CKV_AWS_338:Retention is an input (log_retention_days, default 30 days); the database is the system of record, not the logs.
  for_each = local.fn

  name              = "/aws/lambda/${each.value.name}"
  retention_in_days = var.log_retention_days
  tags              = var.tags
}

resource "aws_lambda_function" "fn" {
  #checkov:skip=CKV_AWS_116:Queue-triggered functions dead-letter on their SQS queue, the scheduled ones are retried by the next tick, and query answers HTTP callers synchronously: nothing is invoked asynchronously, so a DLQ would never receive anything.
  #checkov:skip=CKV_AWS_173:The environment holds no secrets (a secret ARN, queue URL, settings); Lambda encrypts it at rest with the AWS-managed key.
  #checkov:skip=CKV_AWS_272:Code signing needs an AWS Signer profile in the build; scripts/package.sh produces unsigned zips.
  #checkov:skip=CKV_AWS_50:The binaries emit no X-Ray segments; tracing would record only Lambda's own spans.
  for_each = local.fn

  function_name    = each.value.name
  description      = "ferry ${each.key}"
  role             = aws_iam_role.fn[each.key].arn
  runtime          = "provided.al2023"
  handler          = "bootstrap"
  architectures    = [var.architecture]
  filename         = "${var.package_dir}/${each.key}.zip"
  source_code_hash = filebase64sha256("${var.package_dir}/${each.key}.zip")
  memory_size      = each.value.memory_size
  timeout          = each.value.timeout
  # -1 is the provider's "unreserved".
  reserved_concurrent_executions = coalesce(each.value.reserved_concurrency, -1)

  environment {
    variables = merge(
      {
        FERRY_DATABASE_SECRET_ARN = var.database_secret_arn
      },
      local.database_environment,
      contains(local.nudging_functions, each.key) ? {
        FERRY_FANOUT_QUEUE_URL = aws_sqs_queue.main["fanout"].url
      } : {},
      # The keyring's ARN, never the keyring: fanout reads it at cold start with its role.
      contains(local.keyring_functions, each.key) ? {
        FERRY_WEBHOOK_KEYS_SECRET_ARN = var.webhook_keys_secret_arn
      } : {},
      each.key == "query" ? local.query_environment : {},
      var.environment,
      each.value.environment,
    )
  }

  logging_config {
    log_format = "JSON"
    log_group  = aws_cloudwatch_log_group.fn[each.key].name
  }

  dynamic "vpc_config" {
    for_each = var.vpc_config == null ? [] : [var.vpc_config]
    content {
      subnet_ids         = vpc_config.value.subnet_ids
      security_group_ids = vpc_config.value.security_group_ids
    }
  }

  tags = var.tags

  # The role must be able to write logs (and, in a VPC, create interfaces) before the
  # first invocation.
  depends_on = [aws_iam_role_policy.fn]
}
