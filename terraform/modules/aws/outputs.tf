output "queue_urls" {
  description = "Main queue URL per queue-triggered function (ingest, transform, fanout). Producers send CloudEvents to ingest's."
  value       = { for k, q in aws_sqs_queue.main : k => q.url }
}

output "queue_arns" {
  description = "Main queue ARN per queue-triggered function (ingest, transform, fanout)."
  value       = { for k, q in aws_sqs_queue.main : k => q.arn }
}

output "dead_letter_queue_urls" {
  description = "Dead-letter queue URL per queue-triggered function."
  value       = { for k, q in aws_sqs_queue.dlq : k => q.url }
}

output "dead_letter_queue_arns" {
  description = "Dead-letter queue ARN per queue-triggered function."
  value       = { for k, q in aws_sqs_queue.dlq : k => q.arn }
}

output "bucket_name" {
  description = "Bucket for batch files; objects created in it are loaded by transform."
  value       = aws_s3_bucket.batches.id
}

output "bucket_arn" {
  description = "ARN of the batch-file bucket (grant producers s3:PutObject on <arn>/*)."
  value       = aws_s3_bucket.batches.arn
}

output "function_names" {
  description = "Lambda function name per function."
  value       = { for k, f in aws_lambda_function.fn : k => f.function_name }
}

output "function_arns" {
  description = "Lambda function ARN per function."
  value       = { for k, f in aws_lambda_function.fn : k => f.arn }
}

output "role_arns" {
  description = "Execution role ARN per function."
  value       = { for k, r in aws_iam_role.fn : k => r.arn }
}

output "role_names" {
  description = "Execution role name per function (to attach more policies from outside)."
  value       = { for k, r in aws_iam_role.fn : k => r.name }
}

output "log_group_names" {
  description = "CloudWatch log group per function."
  value       = { for k, g in aws_cloudwatch_log_group.fn : k => g.name }
}

output "schedule_arns" {
  description = "EventBridge Scheduler schedule ARN for rollup (tick) and fanout (sweep)."
  value       = { for k, s in aws_scheduler_schedule.fn : k => s.arn }
}

output "alarm_topic_arn" {
  description = "The SNS topic created for the alarms (create_alarm_topic), else null."
  value       = one(aws_sns_topic.alarms[*].arn)
}

output "query_url" {
  description = "Base URL of the query API: the query function's URL followed by v1/ (e.g. <query_url>tenants/<tenant>/...). Requests carry Authorization: Bearer <API key>."
  value       = "${trimsuffix(aws_lambda_function_url.query.function_url, "/")}/v1/"
}

output "query_function_url" {
  description = "The query function's Lambda Function URL itself (https://<id>.lambda-url.<region>.on.aws/), e.g. as a CloudFront origin."
  value       = aws_lambda_function_url.query.function_url
}
