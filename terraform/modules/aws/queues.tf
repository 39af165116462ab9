# One queue and one dead-letter queue per queue-triggered function. The redrive and
# redrive-allow policies are resources of their own, as in terraform-aws-modules/sqs:
# inline, the two queues would reference each other.

resource "aws_sqs_queue" "dlq" {
  for_each = local.queue_functions

  name                      = "${local.fn[each.key].name}-dlq"
  message_retention_seconds = var.dlq_message_retention_seconds
  sqs_managed_sse_enabled   = true
  tags                      = var.tags
}

resource "aws_sqs_queue" "main" {
  for_each = local.queue_functions

  name                       = local.fn[each.key].name
  visibility_timeout_seconds = local.queue[each.key].visibility_timeout
  message_retention_seconds  = var.queue_message_retention_seconds
  # Long polling costs nothing extra and the event source mapping polls anyway.
  receive_wait_time_seconds = 20
  sqs_managed_sse_enabled   = true
  tags                      = var.tags

  lifecycle {
    precondition {
      condition     = local.queue[each.key].visibility_timeout >= 6 * local.fn[each.key].timeout
      error_message = "The ${each.key} queue's visibility timeout must be at least 6 x the function timeout."
    }
  }
}

resource "aws_sqs_queue_redrive_policy" "main" {
  for_each = local.queue_functions

  queue_url = aws_sqs_queue.main[each.key].id
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dlq[each.key].arn
    maxReceiveCount     = var.queue_max_receive_count
  })
}

resource "aws_sqs_queue_redrive_allow_policy" "dlq" {
  for_each = var.create_dlq_redrive_allow_policy ? local.queue_functions : toset([])

  queue_url = aws_sqs_queue.dlq[each.key].id
  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.main[each.key].arn]
  })
}

# S3 may send the bucket's ObjectCreated notifications to the transform queue, and only
# for this bucket.
resource "aws_sqs_queue_policy" "transform" {
  queue_url = aws_sqs_queue.main["transform"].id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "BucketNotifications"
      Effect    = "Allow"
      Principal = { Service = "s3.amazonaws.com" }
      Action    = "sqs:SendMessage"
      Resource  = aws_sqs_queue.main["transform"].arn
      Condition = {
        ArnEquals    = { "aws:SourceArn" = aws_s3_bucket.batches.arn }
        StringEquals = { "aws:SourceAccount" = local.account_id }
      }
    }]
  })

  # SetQueueAttributes for the redrive policy must not race this one on the same queue
  # (moto even resets the policy when another attribute is set), so set it last.
  depends_on = [aws_sqs_queue_redrive_policy.main]
}

resource "aws_lambda_event_source_mapping" "queue" {
  for_each = local.queue_functions

  event_source_arn                   = aws_sqs_queue.main[each.key].arn
  function_name                      = aws_lambda_function.fn[each.key].arn
  batch_size                         = local.queue[each.key].batch_size
  maximum_batching_window_in_seconds = local.queue[each.key].maximum_batching_window
  # Without it Lambda ignores the batchItemFailures the functions return and retries
  # (or deletes) whole batches.
  function_response_types = ["ReportBatchItemFailures"]

  scaling_config {
    maximum_concurrency = local.queue[each.key].maximum_concurrency
  }

  # Lambda checks at creation that the role may receive from the queue.
  depends_on = [aws_iam_role_policy.fn]
}
