output "function_app_names" {
  description = "Function app name per function (the -n of az functionapp deployment source config-zip)."
  value       = { for name, app in azurerm_function_app_flex_consumption.app : name => app.name }
}

output "function_app_default_hostnames" {
  description = "Default hostname per function app."
  value       = { for name, app in azurerm_function_app_flex_consumption.app : name => app.default_hostname }
}

output "query_url" {
  description = "Base URL of the query API: the query app's default hostname followed by /v1/ (e.g. https://ferry-prod-query.azurewebsites.net/v1/). Requests carry Authorization: Bearer <API key>."
  value       = "https://${azurerm_function_app_flex_consumption.app["query"].default_hostname}/v1/"
}

output "function_app_ids" {
  description = "Resource ID per function app."
  value       = { for name, app in azurerm_function_app_flex_consumption.app : name => app.id }
}

output "identity_client_ids" {
  description = "Client ID of each app's user-assigned identity (the __clientId of its connections)."
  value       = local.client_ids
}

output "identity_principal_ids" {
  description = "Object (principal) ID of each app's user-assigned identity, for extra role assignments."
  value       = { for name, identity in azurerm_user_assigned_identity.app : name => identity.principal_id }
}

output "storage_account_name" {
  description = "Storage account holding the queues, the incoming container and the app packages."
  value       = azurerm_storage_account.main.name
}

output "storage_account_id" {
  description = "Resource ID of the storage account."
  value       = azurerm_storage_account.main.id
}

output "queue_names" {
  description = "Queues by role: the ingest queue producers write to, the Event Grid target, the nudge queue, and the poison queues."
  value = {
    ingest       = azurerm_storage_queue.this["ingest"].name
    blob_created = azurerm_storage_queue.this["blob-created"].name
    fanout       = azurerm_storage_queue.this["fanout"].name
    poison       = [for q in local.queues : azurerm_storage_queue.this[q].name if endswith(q, "-poison")]
  }
}

output "queue_endpoint" {
  description = "Queue service endpoint of the storage account (producers send to <endpoint>ingest)."
  value       = azurerm_storage_account.main.primary_queue_endpoint
}

output "incoming_container" {
  description = "Blob container for batch files; each new blob is loaded by transform."
  value       = azurerm_storage_container.this["incoming"].name
}

output "incoming_container_id" {
  description = "Resource ID of the incoming container, for granting producers Storage Blob Data Contributor on it."
  value       = azurerm_storage_container.this["incoming"].id
}

output "eventgrid_deadletter_container" {
  description = "Blob container where Event Grid writes BlobCreated events it could not deliver."
  value       = azurerm_storage_container.this["eventgrid-deadletter"].name
}

output "key_vault_id" {
  description = "The Key Vault the apps' DATABASE_URL reference points into."
  value       = var.key_vault_id
}

output "database_url_secret_id" {
  description = "Versionless ID of the DATABASE_URL secret the apps reference."
  value       = var.database_url_secret_id
}

output "webhook_keys_secret_id" {
  description = "Versionless ID of the webhook keyring secret the fanout app references."
  value       = var.webhook_keys_secret_id
}

output "application_insights_name" {
  description = "Application Insights resource receiving the apps' logs and requests."
  value       = azurerm_application_insights.main.name
}

output "log_analytics_workspace_id" {
  description = "Resource ID of the Log Analytics workspace."
  value       = azurerm_log_analytics_workspace.main.id
}

output "action_group_id" {
  description = "Action group the alerts notify; null when alert_emails is empty."
  value       = one(azurerm_monitor_action_group.alerts[*].id)
}

output "database_fqdn" {
  description = "Host name of the created PostgreSQL server (null unless create_database)."
  value       = one(azurerm_postgresql_flexible_server.main[*].fqdn)
}

output "database_name" {
  description = "Database the created server holds for ferry (null unless create_database)."
  value       = var.create_database ? var.database.database_name : null
}
