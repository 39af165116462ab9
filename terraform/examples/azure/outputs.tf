output "resource_group_name" {
  description = "Resource group holding everything."
  value       = azurerm_resource_group.ferry.name
}

output "function_app_names" {
  description = "App per function, for az functionapp deployment source config-zip -n."
  value       = module.ferry.function_app_names
}

output "function_app_default_hostnames" {
  description = "Default hostname per app."
  value       = module.ferry.function_app_default_hostnames
}

output "query_url" {
  description = "Base URL of the query API (ends in /v1/); requests carry Authorization: Bearer <key from ferry apikey add>."
  value       = module.ferry.query_url
}

output "storage_account_name" {
  description = "Account holding the queues and the incoming container."
  value       = module.ferry.storage_account_name
}

output "queue_names" {
  description = "Queues by role."
  value       = module.ferry.queue_names
}

output "incoming_container" {
  description = "Container for batch files."
  value       = module.ferry.incoming_container
}

output "identity_client_ids" {
  description = "Client ID of each app's identity."
  value       = module.ferry.identity_client_ids
}

output "database_fqdn" {
  description = "Created PostgreSQL server's host name (null when bringing your own)."
  value       = module.ferry.database_fqdn
}

output "webhook_keys_secret_id" {
  description = "The webhook keyring secret the fanout app references (for key rotation)."
  value       = module.ferry.webhook_keys_secret_id
}
