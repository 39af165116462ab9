# One user-assigned identity per app, created before the app so that its roles exist when the
# host first starts. It carries every data-plane role of the app; the app's system-assigned
# identity only reads the DATABASE_URL secret and, for fanout, the webhook keyring (see
# database_url and webhook_keys below).
resource "azurerm_user_assigned_identity" "app" {
  for_each = local.functions

  name                = "${var.name_prefix}-${each.key}-id"
  resource_group_name = var.resource_group_name
  location            = var.location
  tags                = local.tags
}

resource "azurerm_role_assignment" "queue" {
  for_each = { for g in local.queue_role_grants : "${g.app}/${g.queue}/${g.role}" => g }

  scope                = azurerm_storage_queue.this[each.value.queue].id
  role_definition_name = each.value.role
  principal_id         = azurerm_user_assigned_identity.app[each.value.app].principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_role_assignment" "container" {
  for_each = { for g in local.container_role_grants : "${g.app}/${g.container}/${g.role}" => g }

  scope                = azurerm_storage_container.this[each.value.container].id
  role_definition_name = each.value.role
  principal_id         = azurerm_user_assigned_identity.app[each.value.app].principal_id
  principal_type       = "ServicePrincipal"
}

# Application Insights accepts only Entra-authenticated telemetry (local auth is off).
resource "azurerm_role_assignment" "telemetry" {
  for_each = local.functions

  scope                = azurerm_application_insights.main.id
  role_definition_name = "Monitoring Metrics Publisher"
  principal_id         = azurerm_user_assigned_identity.app[each.key].principal_id
  principal_type       = "ServicePrincipal"
}

# Key Vault references are resolved with the app's system-assigned identity:
# azurerm_function_app_flex_consumption has no key_vault_reference_identity_id (it is
# hashicorp/terraform-provider-azurerm PR #31439, unmerged), so the user-assigned identity
# cannot be chosen for them. That identity gets this one role, on this one secret.
resource "azurerm_role_assignment" "database_url" {
  for_each = local.functions

  scope                = local.database_url_secret_scope
  role_definition_name = "Key Vault Secrets User"
  principal_id         = azurerm_function_app_flex_consumption.app[each.key].identity[0].principal_id
  principal_type       = "ServicePrincipal"
}

# The webhook keyring, the same way, for fanout's system-assigned identity only: the other
# apps never open a sealed signing secret.
resource "azurerm_role_assignment" "webhook_keys" {
  scope                = local.webhook_keys_secret_scope
  role_definition_name = "Key Vault Secrets User"
  principal_id         = azurerm_function_app_flex_consumption.app["fanout"].identity[0].principal_id
  principal_type       = "ServicePrincipal"
}

# Event Grid delivers to the queue and dead-letters to the container with its own identity:
# with shared keys off, keyless delivery is the only kind the account accepts.
resource "azurerm_user_assigned_identity" "eventgrid" {
  name                = "${var.name_prefix}-eventgrid-id"
  resource_group_name = var.resource_group_name
  location            = var.location
  tags                = local.tags
}

resource "azurerm_role_assignment" "eventgrid_delivery" {
  scope                = azurerm_storage_queue.this["blob-created"].id
  role_definition_name = "Storage Queue Data Message Sender"
  principal_id         = azurerm_user_assigned_identity.eventgrid.principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_role_assignment" "eventgrid_deadletter" {
  scope                = azurerm_storage_container.this["eventgrid-deadletter"].id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_user_assigned_identity.eventgrid.principal_id
  principal_type       = "ServicePrincipal"
}
