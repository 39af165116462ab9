# What an operator must hear about: dead-lettered messages, queues falling behind,
# functions failing or being throttled, and the query API answering with server errors.

# CloudWatch cannot publish to a topic encrypted with the AWS-managed aws/sns key (its
# key policy does not admit cloudwatch.amazonaws.com), so a created topic gets a key of
# its own.
resource "aws_kms_key" "alarms" {
  count = var.create_alarm_topic ? 1 : 0

  description             = "${var.name_prefix} alarm topic"
  enable_key_rotation     = true
  deletion_window_in_days = 7
  # In a key policy, Resource "*" is this key and nothing else.
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "AccountAdministers"
        Effect    = "Allow"
        Principal = { AWS = "arn:${local.partition}:iam::${local.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        # No source condition: AWS documents none for CloudWatch's alarm actions, and the
        # key serves only this topic, whose default policy admits only this account.
        Sid       = "CloudWatchPublishes"
        Effect    = "Allow"
        Principal = { Service = "cloudwatch.amazonaws.com" }
        Action    = ["kms:Decrypt", "kms:GenerateDataKey*"]
        Resource  = "*"
      },
    ]
  })
  tags = var.tags
}

resource "aws_sns_topic" "alarms" {
  count = var.create_alarm_topic ? 1 : 0

  name              = "${var.name_prefix}-alarms"
  kms_master_key_id = aws_kms_key.alarms[0].arn
  tags              = var.tags
}

resource "aws_cloudwatch_metric_alarm" "dlq_depth" {
  for_each = local.queue_functions

  alarm_name          = "${aws_sqs_queue.dlq[each.key].name}-not-empty"
  alarm_description   = "Messages of ${each.key} were dead-lettered after ${var.queue_max_receive_count} deliveries: inspect them and redrive."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = aws_sqs_queue.dlq[each.key].name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "queue_age" {
  for_each = local.queue_functions

  alarm_name          = "${aws_sqs_queue.main[each.key].name}-falling-behind"
  alarm_description   = "The oldest message on the ${each.key} queue is older than ${var.queue_age_alarm_seconds} s."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateAgeOfOldestMessage"
  dimensions          = { QueueName = aws_sqs_queue.main[each.key].name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 2
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.queue_age_alarm_seconds
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "errors" {
  for_each = local.fn

  alarm_name          = "${each.value.name}-errors"
  alarm_description   = "ferry ${each.key} invocations failed (a crash, a timeout, or a tick that reported failure)."
  namespace           = "AWS/Lambda"
  metric_name         = "Errors"
  dimensions          = { FunctionName = aws_lambda_function.fn[each.key].function_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "throttles" {
  for_each = local.fn

  alarm_name          = "${each.value.name}-throttles"
  alarm_description   = "ferry ${each.key} invocations were throttled (reserved or account concurrency exhausted)."
  namespace           = "AWS/Lambda"
  metric_name         = "Throttles"
  dimensions          = { FunctionName = aws_lambda_function.fn[each.key].function_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = var.tags
}

# query answers a database it cannot reach with 503, which Lambda counts as a success: its
# Errors alarm only sees crashes and timeouts. The URL's 5xx count sees both (and Lambda's
# own 502s); a caller's mistakes (400, 401, 404, 429) are 4xx and stay out of it.
resource "aws_cloudwatch_metric_alarm" "query_5xx" {
  alarm_name          = "${local.fn["query"].name}-5xx"
  alarm_description   = "The query API answered with server errors (5xx: the database unreachable, a crash or a timeout)."
  namespace           = "AWS/Lambda"
  metric_name         = "Url5xxCount"
  dimensions          = { FunctionName = aws_lambda_function.fn["query"].function_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_actions
  ok_actions          = local.alarm_actions
  tags                = var.tags
}
