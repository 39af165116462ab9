# rollup's tick and fanout's sweep, every minute by default, through EventBridge Scheduler:
# it invokes with a role of its own (one per schedule, allowed to invoke exactly its
# function), so the functions need no resource policy.

resource "aws_iam_role" "schedule" {
  for_each = local.scheduled_functions

  name        = "${local.fn[each.key].name}-schedule"
  description = "EventBridge Scheduler invoking ferry ${each.key}"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "scheduler.amazonaws.com" }
      Action    = "sts:AssumeRole"
      # Only schedules of this account may use the role.
      Condition = { StringEquals = { "aws:SourceAccount" = local.account_id } }
    }]
  })
  tags = var.tags
}

resource "aws_iam_role_policy" "schedule" {
  for_each = local.scheduled_functions

  name = "${local.fn[each.key].name}-schedule-invoke"
  role = aws_iam_role.schedule[each.key].id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid      = "InvokeFunction"
      Effect   = "Allow"
      Action   = "lambda:InvokeFunction"
      Resource = aws_lambda_function.fn[each.key].arn
    }]
  })
}

resource "aws_scheduler_schedule" "fn" {
  #checkov:skip=CKV_AWS_297:The schedule's payload is a fixed template with no data worth a customer-managed key.
  for_each = local.scheduled_functions

  name                = local.fn[each.key].name
  description         = each.key == "rollup" ? "ferry rollup tick" : "ferry fanout sweep"
  schedule_expression = var.schedule_expression

  flexible_time_window {
    mode = "OFF"
  }

  target {
    arn      = aws_lambda_function.fn[each.key].arn
    role_arn = aws_iam_role.schedule[each.key].arn
    # The binaries read "time" (the tick's scheduled time), as in an EventBridge rule's
    # "Scheduled Event". A literal string, not jsonencode(): that escapes < and > as
    # \u003c/\u003e, and Scheduler would no longer find its keyword to substitute.
    input = "{\"source\":\"ferry.scheduler\",\"detail-type\":\"Scheduled Event\",\"time\":\"<aws.scheduler.scheduled-time>\"}"

    # A missed tick is made up by the next one a minute later; retrying it would only
    # queue ticks behind a reserved concurrency of one.
    retry_policy {
      maximum_retry_attempts       = 0
      maximum_event_age_in_seconds = 60
    }
  }

  depends_on = [aws_iam_role_policy.schedule]
}
