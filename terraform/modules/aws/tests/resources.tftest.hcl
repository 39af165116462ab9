# What the module creates, and what only appears when asked for. Applied against a mocked
# provider (offline); the provider still validates ARNs, so the mocks return real-shaped ones.

mock_provider "aws" {
  mock_data "aws_caller_identity" {
    defaults = { account_id = "123456789012" }
  }
  mock_data "aws_partition" {
    defaults = { partition = "aws" }
  }
  mock_data "aws_region" {
    defaults = { id = "eu-west-1", name = "eu-west-1" }
  }
  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::123456789012:role/mock" }
  }
  mock_resource "aws_sqs_queue" {
    defaults = {
      arn = "arn:aws:sqs:eu-west-1:123456789012:mock"
      url = "https://sqs.eu-west-1.amazonaws.com/123456789012/mock"
      id  = "https://sqs.eu-west-1.amazonaws.com/123456789012/mock"
    }
  }
  mock_resource "aws_lambda_function" {
    defaults = { arn = "arn:aws:lambda:eu-west-1:123456789012:function:mock" }
  }
  mock_resource "aws_s3_bucket" {
    defaults = { arn = "arn:aws:s3:::mock-bucket", id = "mock-bucket" }
  }
  mock_resource "aws_cloudwatch_log_group" {
    defaults = { arn = "arn:aws:logs:eu-west-1:123456789012:log-group:/aws/lambda/mock" }
  }
  mock_resource "aws_kms_key" {
    defaults = { arn = "arn:aws:kms:eu-west-1:123456789012:key/00000000-0000-0000-0000-000000000000" }
  }
  mock_resource "aws_sns_topic" {
    defaults = { arn = "arn:aws:sns:eu-west-1:123456789012:mock-alarms" }
  }
  mock_resource "aws_lambda_function_url" {
    defaults = { function_url = "https://mockurlid.lambda-url.eu-west-1.on.aws/" }
  }
}

variables {
  name_prefix             = "ferry-test"
  package_dir             = "tests/package"
  database_secret_arn     = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:ferry-db-AbCdEf"
  webhook_keys_secret_arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:ferry-webhook-keys-GhIjKl"
}

run "defaults" {
  command = apply

  assert {
    condition     = toset(keys(aws_lambda_function.fn)) == toset(["ingest", "transform", "rollup", "fanout", "query"])
    error_message = "one Lambda function per ferry function"
  }
  assert {
    condition = alltrue([for f in aws_lambda_function.fn :
    f.runtime == "provided.al2023" && f.handler == "bootstrap" && f.architectures == tolist(["x86_64"])])
    error_message = "custom runtime, bootstrap handler, x86_64 by default"
  }
  assert {
    condition     = alltrue([for f in aws_lambda_function.fn : length(f.vpc_config) == 0])
    error_message = "no VPC unless vpc_config is given"
  }
  assert {
    condition     = alltrue([for f in aws_lambda_function.fn : f.logging_config[0].log_format == "JSON"])
    error_message = "JSON logs"
  }
  assert {
    condition = alltrue([for f in aws_lambda_function.fn :
      f.environment[0].variables["FERRY_DATABASE_SECRET_ARN"] == var.database_secret_arn &&
    !contains(keys(f.environment[0].variables), "DATABASE_URL")])
    error_message = "every function gets the secret ARN, none a DATABASE_URL"
  }
  assert {
    condition = alltrue([for f in aws_lambda_function.fn :
      length(setintersection(keys(f.environment[0].variables),
    ["FERRY_DATABASE_HOST", "FERRY_DATABASE_PORT", "FERRY_DATABASE_NAME", "FERRY_DATABASE_SSLMODE"])) == 0])
    error_message = "no database host/port/name variables unless given"
  }
  assert {
    condition = alltrue([for k in ["ingest", "transform", "rollup"] :
    aws_lambda_function.fn[k].environment[0].variables["FERRY_FANOUT_QUEUE_URL"] == aws_sqs_queue.main["fanout"].url])
    error_message = "ingest, transform and rollup nudge the fanout queue"
  }
  assert {
    condition     = !contains(keys(aws_lambda_function.fn["fanout"].environment[0].variables), "FERRY_FANOUT_QUEUE_URL")
    error_message = "fanout does not nudge itself"
  }
  assert {
    condition     = keys(aws_lambda_function.fn["query"].environment[0].variables) == tolist(["FERRY_DATABASE_SECRET_ARN"])
    error_message = "query gets the secret's ARN and nothing else by default: no queue, no keyring, no CORS origins"
  }
  assert {
    condition     = aws_lambda_function.fn["fanout"].environment[0].variables["FERRY_WEBHOOK_KEYS_SECRET_ARN"] == var.webhook_keys_secret_arn
    error_message = "fanout gets the keyring secret's ARN"
  }
  assert {
    condition = alltrue([for k in ["ingest", "transform", "rollup", "query"] :
    length(setintersection(keys(aws_lambda_function.fn[k].environment[0].variables), ["FERRY_WEBHOOK_KEYS_SECRET_ARN", "FERRY_WEBHOOK_KEYS", "FERRY_WEBHOOK_KEYS_FILE"])) == 0])
    error_message = "ingest, transform, rollup and query learn nothing of the keyring"
  }
  assert {
    condition     = alltrue([for f in aws_lambda_function.fn : !contains(keys(f.environment[0].variables), "FERRY_WEBHOOK_KEYS")])
    error_message = "no function gets the keyring itself in its environment"
  }
  assert {
    condition     = aws_lambda_function.fn["rollup"].reserved_concurrent_executions == 1 && aws_lambda_function.fn["fanout"].reserved_concurrent_executions == 3
    error_message = "rollup runs one tick at a time; fanout has a small reservation"
  }
  assert {
    condition     = aws_lambda_function.fn["ingest"].reserved_concurrent_executions == -1
    error_message = "ingest is bounded by its event source mapping, not a reservation"
  }
  assert {
    condition     = alltrue([for k, q in aws_sqs_queue.main : q.visibility_timeout_seconds == 6 * aws_lambda_function.fn[k].timeout])
    error_message = "visibility timeout is six times the function timeout"
  }
  assert {
    condition     = alltrue([for q in aws_sqs_queue.main : q.sqs_managed_sse_enabled]) && alltrue([for q in aws_sqs_queue.dlq : q.sqs_managed_sse_enabled])
    error_message = "every queue is encrypted"
  }
  assert {
    condition     = alltrue([for k, r in aws_sqs_queue_redrive_policy.main : jsondecode(r.redrive_policy).maxReceiveCount == 5])
    error_message = "messages are dead-lettered after 5 receives by default"
  }
  assert {
    condition     = length(aws_sqs_queue_redrive_allow_policy.dlq) == 3
    error_message = "each dead-letter queue accepts only its source queue"
  }
  assert {
    condition = alltrue([for m in aws_lambda_event_source_mapping.queue :
    m.function_response_types == toset(["ReportBatchItemFailures"]) && m.scaling_config[0].maximum_concurrency >= 2])
    error_message = "every mapping reports partial batch failures and is capped"
  }
  assert {
    condition     = toset(keys(aws_scheduler_schedule.fn)) == toset(["rollup", "fanout"])
    error_message = "rollup and fanout run on a schedule"
  }
  assert {
    condition     = alltrue([for s in aws_scheduler_schedule.fn : jsondecode(s.target[0].input).time == "<aws.scheduler.scheduled-time>"])
    error_message = "the schedule passes its scheduled time"
  }
  assert {
    condition     = length(aws_sns_topic.alarms) == 0 && length(aws_kms_key.alarms) == 0
    error_message = "no alarm topic unless asked for"
  }
  assert {
    condition     = alltrue([for a in aws_cloudwatch_metric_alarm.errors : length(a.alarm_actions) == 0])
    error_message = "alarms without a topic have no actions"
  }
  assert {
    condition = alltrue([for p in aws_iam_role_policy.fn :
    !contains([for s in jsondecode(p.policy).Statement : s.Sid], "DecryptDatabaseSecret")])
    error_message = "no kms:Decrypt without a customer-managed key"
  }
  assert {
    condition = alltrue([for p in aws_iam_role_policy.fn :
    length([for s in jsondecode(p.policy).Statement : s if s.Resource == "*"]) == 0])
    error_message = "no statement on every resource outside a VPC"
  }
  assert {
    condition     = [for s in jsondecode(aws_iam_role_policy.fn["fanout"].policy).Statement : s.Sid] == ["WriteOwnLogs", "ReadDatabaseSecret", "ReadWebhookKeys", "ConsumeOwnQueue"]
    error_message = "fanout may write its logs, read the two secrets and consume its queue, nothing else"
  }
  assert {
    condition = [for s in jsondecode(aws_iam_role_policy.fn["fanout"].policy).Statement : s if s.Sid == "ReadWebhookKeys"] == [{
      Sid      = "ReadWebhookKeys"
      Effect   = "Allow"
      Action   = "secretsmanager:GetSecretValue"
      Resource = var.webhook_keys_secret_arn
    }]
    error_message = "fanout may read the keyring secret, and only that one"
  }
  assert {
    condition = alltrue([for k in ["ingest", "transform", "rollup", "query"] :
      length([for s in jsondecode(aws_iam_role_policy.fn[k].policy).Statement : s
    if s.Sid == "ReadWebhookKeys" || s.Resource == var.webhook_keys_secret_arn]) == 0])
    error_message = "ingest, transform, rollup and query may not read the keyring secret"
  }
  assert {
    condition = [for s in jsondecode(aws_iam_role_policy.fn["ingest"].policy).Statement : s.Sid] == [
    "WriteOwnLogs", "ReadDatabaseSecret", "ConsumeOwnQueue", "NudgeFanout"]
    error_message = "ingest may write its logs, read the database secret, consume its queue and nudge the fanout"
  }
  assert {
    condition     = [for s in jsondecode(aws_iam_role_policy.fn["rollup"].policy).Statement : s.Sid] == ["WriteOwnLogs", "ReadDatabaseSecret", "NudgeFanout"]
    error_message = "rollup may write its logs, read the secret and nudge the fanout"
  }
  assert {
    condition = [for s in jsondecode(aws_iam_role_policy.fn["transform"].policy).Statement : s.Sid] == [
    "WriteOwnLogs", "ReadDatabaseSecret", "ConsumeOwnQueue", "NudgeFanout", "ReadBatchFiles", "ListBatchFiles"]
    error_message = "transform additionally reads the bucket"
  }
  assert {
    condition     = [for s in jsondecode(aws_iam_role_policy.fn["query"].policy).Statement : s.Sid] == ["WriteOwnLogs", "ReadDatabaseSecret"]
    error_message = "query may write its logs and read the database secret, nothing else: no queue, no bucket, no nudge"
  }
  assert {
    condition     = aws_lambda_function.fn["query"].reserved_concurrent_executions == 10 && aws_lambda_function.fn["query"].timeout == 30
    error_message = "query's public URL is capped at 10 instances; callers wait at most 30 s"
  }
  assert {
    condition = (aws_lambda_function_url.query.function_name == aws_lambda_function.fn["query"].function_name &&
      aws_lambda_function_url.query.authorization_type == "NONE" &&
    aws_lambda_function_url.query.invoke_mode == "BUFFERED" && length(aws_lambda_function_url.query.cors) == 0)
    error_message = "query has a public URL (the function checks API keys) without Lambda-side CORS"
  }
  assert {
    condition     = output.query_url == "https://mockurlid.lambda-url.eu-west-1.on.aws/v1/" && output.query_function_url == "https://mockurlid.lambda-url.eu-west-1.on.aws/"
    error_message = "the API's base URL is the function URL followed by v1/"
  }
  assert {
    condition = (aws_cloudwatch_metric_alarm.query_5xx.metric_name == "Url5xxCount" &&
    aws_cloudwatch_metric_alarm.query_5xx.dimensions == tomap({ FunctionName = aws_lambda_function.fn["query"].function_name }))
    error_message = "the query API's server errors have an alarm"
  }
}

run "query_cors_origins_reach_query_only" {
  command = apply

  variables {
    query_cors_origins = ["https://shop.example", "http://localhost:5173"]
  }

  assert {
    condition     = aws_lambda_function.fn["query"].environment[0].variables["FERRY_QUERY_CORS_ORIGINS"] == "https://shop.example,http://localhost:5173"
    error_message = "the origins reach query, comma-separated"
  }
  assert {
    condition     = alltrue([for k, f in aws_lambda_function.fn : !contains(keys(f.environment[0].variables), "FERRY_QUERY_CORS_ORIGINS") if k != "query"])
    error_message = "no other function gets them"
  }
}

run "vpc_config_adds_the_interfaces_and_their_permissions" {
  command = apply

  variables {
    vpc_config = { subnet_ids = ["subnet-0a1b2c3d", "subnet-4e5f6a7b"], security_group_ids = ["sg-0123abcd"] }
  }

  assert {
    condition = alltrue([for f in aws_lambda_function.fn :
    toset(f.vpc_config[0].subnet_ids) == toset(["subnet-0a1b2c3d", "subnet-4e5f6a7b"]) && toset(f.vpc_config[0].security_group_ids) == toset(["sg-0123abcd"])])
    error_message = "every function runs in the given subnets"
  }
  assert {
    condition = alltrue([for p in aws_iam_role_policy.fn :
    [for s in jsondecode(p.policy).Statement : s.Resource if s.Resource == "*"] == ["*"]])
    error_message = "only the Describe statement covers every resource"
  }
  assert {
    condition = alltrue([for p in aws_iam_role_policy.fn : [for s in jsondecode(p.policy).Statement : s if s.Sid == "VpcCreateInterfaces"][0].Resource == [
      "arn:aws:ec2:eu-west-1:123456789012:network-interface/*",
      "arn:aws:ec2:eu-west-1:123456789012:subnet/subnet-0a1b2c3d",
      "arn:aws:ec2:eu-west-1:123456789012:subnet/subnet-4e5f6a7b",
      "arn:aws:ec2:eu-west-1:123456789012:security-group/sg-0123abcd",
    ]])
    error_message = "interfaces may be created only in the given subnets and security groups"
  }
}

run "alarm_topic_when_asked_for" {
  command = apply

  variables {
    create_alarm_topic = true
  }

  assert {
    condition     = length(aws_sns_topic.alarms) == 1 && aws_sns_topic.alarms[0].kms_master_key_id == aws_kms_key.alarms[0].arn
    error_message = "the topic is encrypted with its own key"
  }
  assert {
    condition     = aws_kms_key.alarms[0].enable_key_rotation
    error_message = "the topic key rotates"
  }
  assert {
    condition = alltrue(flatten([for alarms in [aws_cloudwatch_metric_alarm.dlq_depth, aws_cloudwatch_metric_alarm.queue_age, aws_cloudwatch_metric_alarm.errors, aws_cloudwatch_metric_alarm.throttles, { query = aws_cloudwatch_metric_alarm.query_5xx }] :
    [for a in alarms : a.alarm_actions == toset([aws_sns_topic.alarms[0].arn])]]))
    error_message = "every alarm notifies the topic"
  }
  assert {
    condition     = output.alarm_topic_arn == aws_sns_topic.alarms[0].arn
    error_message = "the topic is an output"
  }
}

run "existing_alarm_topic" {
  command = apply

  variables {
    alarm_topic_arn = "arn:aws:sns:eu-west-1:123456789012:oncall"
  }

  assert {
    condition     = length(aws_sns_topic.alarms) == 0 && alltrue([for a in aws_cloudwatch_metric_alarm.dlq_depth : a.alarm_actions == toset(["arn:aws:sns:eu-west-1:123456789012:oncall"])])
    error_message = "alarms notify the given topic and none is created"
  }
}

run "customer_managed_key_for_the_secret" {
  command = apply

  variables {
    kms_key_arn = "arn:aws:kms:eu-west-1:123456789012:key/11111111-2222-3333-4444-555555555555"
  }

  assert {
    condition = alltrue([for p in aws_iam_role_policy.fn : [for s in jsondecode(p.policy).Statement : s if s.Sid == "DecryptDatabaseSecret"] == [{
      Sid       = "DecryptDatabaseSecret"
      Effect    = "Allow"
      Action    = "kms:Decrypt"
      Resource  = "arn:aws:kms:eu-west-1:123456789012:key/11111111-2222-3333-4444-555555555555"
      Condition = { StringEquals = { "kms:ViaService" = "secretsmanager.eu-west-1.amazonaws.com" } }
    }]])
    error_message = "every role may decrypt with the key, through Secrets Manager only"
  }
}

run "customer_managed_key_for_the_webhook_keys" {
  command = apply

  variables {
    webhook_keys_kms_key_arn = "arn:aws:kms:eu-west-1:123456789012:key/66666666-7777-8888-9999-000000000000"
  }

  assert {
    condition = [for s in jsondecode(aws_iam_role_policy.fn["fanout"].policy).Statement : s if s.Sid == "DecryptWebhookKeys"] == [{
      Sid       = "DecryptWebhookKeys"
      Effect    = "Allow"
      Action    = "kms:Decrypt"
      Resource  = "arn:aws:kms:eu-west-1:123456789012:key/66666666-7777-8888-9999-000000000000"
      Condition = { StringEquals = { "kms:ViaService" = "secretsmanager.eu-west-1.amazonaws.com" } }
    }]
    error_message = "fanout may decrypt with the keyring's key, through Secrets Manager only"
  }
  assert {
    condition     = [for s in jsondecode(aws_iam_role_policy.fn["fanout"].policy).Statement : s.Sid] == ["WriteOwnLogs", "ReadDatabaseSecret", "ReadWebhookKeys", "DecryptWebhookKeys", "ConsumeOwnQueue"]
    error_message = "the key adds one statement to fanout's policy"
  }
  assert {
    condition = alltrue([for k in ["ingest", "transform", "rollup", "query"] :
      length([for s in jsondecode(aws_iam_role_policy.fn[k].policy).Statement : s
    if s.Sid == "DecryptWebhookKeys" || s.Resource == "arn:aws:kms:eu-west-1:123456789012:key/66666666-7777-8888-9999-000000000000"]) == 0])
    error_message = "no other role may use the keyring's key"
  }
}

run "database_address_for_an_rds_master_secret" {
  command = apply

  variables {
    database_host    = "ferry-db.abc.eu-west-1.rds.amazonaws.com"
    database_port    = 5432
    database_name    = "ferry"
    database_sslmode = "require"
    environment      = { RUST_LOG = "debug" }
    functions        = { ingest = { environment = { RUST_LOG = "info", FERRY_DB_MAX_CONNECTIONS = "8" } } }
  }

  assert {
    condition = alltrue([for f in aws_lambda_function.fn :
      f.environment[0].variables["FERRY_DATABASE_HOST"] == "ferry-db.abc.eu-west-1.rds.amazonaws.com" &&
      f.environment[0].variables["FERRY_DATABASE_PORT"] == "5432" &&
      f.environment[0].variables["FERRY_DATABASE_NAME"] == "ferry" &&
    f.environment[0].variables["FERRY_DATABASE_SSLMODE"] == "require"])
    error_message = "host, port and name reach every function"
  }
  assert {
    condition = (aws_lambda_function.fn["ingest"].environment[0].variables["RUST_LOG"] == "info" &&
      aws_lambda_function.fn["ingest"].environment[0].variables["FERRY_DB_MAX_CONNECTIONS"] == "8" &&
    aws_lambda_function.fn["transform"].environment[0].variables["RUST_LOG"] == "debug")
    error_message = "per-function environment wins over the common one"
  }
}

run "without_redrive_allow_policy" {
  command = apply

  variables {
    create_dlq_redrive_allow_policy = false
  }

  assert {
    condition     = length(aws_sqs_queue_redrive_allow_policy.dlq) == 0 && length(aws_sqs_queue_redrive_policy.main) == 3
    error_message = "the toggle drops only the redrive allow policies"
  }
}
