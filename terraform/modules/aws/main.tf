data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  # `name` is deprecated in provider 6.x in favour of `region`; `id` holds the region in both.
  region = data.aws_region.current.id

  # Which trigger each function has. fanout has both: its queue carries the nudges that
  # ingest, transform and rollup send after a commit that queued webhook deliveries. query
  # has neither: it answers HTTP requests through its Function URL (url.tf) and only reads.
  queue_functions     = toset(["ingest", "transform", "fanout"])
  scheduled_functions = toset(["rollup", "fanout"])
  nudging_functions   = toset(["ingest", "transform", "rollup"])
  # Only fanout opens the sealed webhook signing secrets (to sign deliveries), so only fanout
  # learns where the keyring is and may read it.
  keyring_functions = toset(["fanout"])

  fn = {
    for name in ["ingest", "transform", "rollup", "fanout", "query"] : name => {
      name                 = "${var.name_prefix}-${name}"
      memory_size          = var.functions[name].memory_size
      timeout              = var.functions[name].timeout
      reserved_concurrency = var.functions[name].reserved_concurrency
      environment          = var.functions[name].environment
    }
  }

  queue = {
    for name in local.queue_functions : name => {
      batch_size              = var.functions[name].batch_size
      maximum_batching_window = var.functions[name].maximum_batching_window
      maximum_concurrency     = var.functions[name].maximum_concurrency
      visibility_timeout      = coalesce(var.functions[name].visibility_timeout, 6 * var.functions[name].timeout)
    }
  }

  # The origins browsers may call the query API from; unset when none (the function then
  # sends no CORS headers).
  query_environment = length(var.query_cors_origins) == 0 ? {} : {
    FERRY_QUERY_CORS_ORIGINS = join(",", var.query_cors_origins)
  }

  # Non-secret database settings for secrets that hold only username and password.
  database_environment = {
    for k, v in {
      FERRY_DATABASE_HOST    = var.database_host
      FERRY_DATABASE_PORT    = var.database_port == null ? null : tostring(var.database_port)
      FERRY_DATABASE_NAME    = var.database_name
      FERRY_DATABASE_SSLMODE = var.database_sslmode
    } : k => v if v != null
  }

  alarm_actions = concat(
    aws_sns_topic.alarms[*].arn,
    var.alarm_topic_arn == null ? [] : [var.alarm_topic_arn],
  )
}
