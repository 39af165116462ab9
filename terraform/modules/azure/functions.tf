# Flex Consumption allows one app per plan.
resource "azurerm_service_plan" "app" {
  #checkov:skip=CKV_AZURE_212:Worker counts apply to dedicated plans; a Flex Consumption app scales out per trigger up to maximum_instance_count.
  #checkov:skip=CKV_AZURE_225:Zone redundancy is the zone_redundant input, off by default because Flex Consumption offers it only in some regions (and the storage account must be zone-redundant too).
  for_each = local.functions

  name                = "${var.name_prefix}-${each.key}-plan"
  resource_group_name = var.resource_group_name
  location            = var.location
  os_type             = "Linux"
  sku_name            = "FC1"

  zone_balancing_enabled = var.zone_redundant

  tags = local.tags
}

resource "azurerm_function_app_flex_consumption" "app" {
  for_each = local.functions

  name                = "${var.name_prefix}-${each.key}"
  resource_group_name = var.resource_group_name
  location            = var.location
  service_plan_id     = azurerm_service_plan.app[each.key].id

  # The package (host.json, the function.json folders, the `handler` executable) is deployed
  # after apply with OneDeploy (az functionapp deployment source config-zip): zip_deploy_file
  # posts to /api/zipdeploy, which Flex does not serve (terraform-provider-azurerm#29630).
  runtime_name    = "custom"
  runtime_version = var.custom_runtime_version

  storage_container_type            = "blobContainer"
  storage_container_endpoint        = "${azurerm_storage_account.main.primary_blob_endpoint}${azurerm_storage_container.this["deploy-${each.key}"].name}"
  storage_authentication_type       = "UserAssignedIdentity"
  storage_user_assigned_identity_id = azurerm_user_assigned_identity.app[each.key].id

  maximum_instance_count = each.value.maximum_instance_count
  instance_memory_in_mb  = each.value.instance_memory_in_mb

  https_only = true
  # OneDeploy from the CLI signs in with Entra ID; publishing-profile passwords stay off.
  webdeploy_publish_basic_authentication_enabled = false

  identity {
    # UserAssigned: every data-plane role. SystemAssigned: Key Vault references only.
    type         = "SystemAssigned, UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.app[each.key].id]
  }

  site_config {
    # Written by azurerm as APPLICATIONINSIGHTS_CONNECTION_STRING. It names the ingestion
    # endpoint and resource and is not a credential (Microsoft's guidance); with local
    # authentication off, writes also need the identity in APPLICATIONINSIGHTS_AUTHENTICATION_STRING.
    application_insights_connection_string = azurerm_application_insights.main.connection_string
    minimum_tls_version                    = "1.2"
    scm_minimum_tls_version                = "1.2"
    http2_enabled                          = true
  }

  # No FUNCTIONS_WORKER_RUNTIME / FUNCTIONS_EXTENSION_VERSION: Flex takes the runtime from
  # runtime_name/runtime_version and rejects those settings.
  app_settings = merge(
    local.shared_app_settings,
    local.per_app_settings[each.key],
    each.key == "query" ? local.query_app_settings : {},
    var.app_settings,
    each.value.app_settings,
  )

  tags = local.tags

  # The host starts as soon as the app exists; its storage roles must be there by then.
  depends_on = [
    azurerm_role_assignment.queue,
    azurerm_role_assignment.container,
    azurerm_role_assignment.telemetry,
  ]
}
