output "ingest_queue_url" {
  description = "Send CloudEvents here."
  value       = module.ferry.queue_urls["ingest"]
}

output "query_url" {
  description = "Base URL of the query API (ends in /v1/); requests carry Authorization: Bearer <key from ferry apikey add>."
  value       = module.ferry.query_url
}

output "bucket_name" {
  description = "Put batch files here; transform loads every new object."
  value       = module.ferry.bucket_name
}

output "queue_urls" {
  description = "Main queue per queue-triggered function."
  value       = module.ferry.queue_urls
}

output "dead_letter_queue_urls" {
  description = "Dead-letter queue per queue-triggered function."
  value       = module.ferry.dead_letter_queue_urls
}

output "function_names" {
  description = "Lambda function per function."
  value       = module.ferry.function_names
}

output "role_arns" {
  description = "Execution role per function."
  value       = module.ferry.role_arns
}

output "alarm_topic_arn" {
  description = "SNS topic of the alarms, if created."
  value       = module.ferry.alarm_topic_arn
}

output "database_secret_arn" {
  description = "The secret the functions read the database credentials from."
  value       = var.create_database ? aws_db_instance.ferry[0].master_user_secret[0].secret_arn : var.database_secret_arn
}

output "webhook_keys_secret_arn" {
  description = "The secret fanout reads the webhook keyring from (for key rotation and ferry secrets rekey)."
  value       = var.webhook_keys_secret_arn
}

output "database_address" {
  description = "Host, port and database name of the created RDS instance (null with option a)."
  value = var.create_database ? {
    host   = aws_db_instance.ferry[0].address
    port   = aws_db_instance.ferry[0].port
    dbname = aws_db_instance.ferry[0].db_name
  } : null
}
