# One account for the queues, the incoming batch files, the Functions host's storage and the
# app packages: every consumer signs in with a managed identity, so shared keys are off.
resource "azurerm_storage_account" "main" {
  #checkov:skip=CKV_AZURE_59:Flex Consumption apps without VNet integration reach storage from no fixed addresses, so the public endpoint stays open; access is Entra-only (shared keys off). Private endpoints need the VNet integration this module leaves to the platform team.
  #checkov:skip=CKV2_AZURE_33:Private endpoints need VNet integration of the apps, which this module does not set up (see CKV_AZURE_59).
  #checkov:skip=CKV2_AZURE_1:Encrypted at rest with Microsoft-managed keys; a customer-managed key needs a key the module does not own.
  #checkov:skip=CKV_AZURE_206:Replication is the storage_replication_type input (ZRS by default: survives a zone). The queues and batch files are transient (loaded rows live in PostgreSQL) and a geo failover would not move the function apps.
  #checkov:skip=CKV_AZURE_33:Classic queue logging (queue_properties) needs the storage data plane, which Terraform does not use here (shared keys off, data_plane_available = false), and azurerm 5 drops the block; queue writes and deletes reach Log Analytics through a diagnostic setting instead.
  name                     = local.storage_account_name
  resource_group_name      = var.resource_group_name
  location                 = var.location
  account_kind             = "StorageV2"
  account_tier             = "Standard"
  account_replication_type = var.storage_replication_type

  min_tls_version                  = "TLS1_2"
  https_traffic_only_enabled       = true
  allow_nested_items_to_be_public  = false
  shared_access_key_enabled        = false
  default_to_oauth_authentication  = true
  local_user_enabled               = false
  sftp_enabled                     = false
  cross_tenant_replication_enabled = false
  allowed_copy_scope               = "AAD"
  public_network_access_enabled    = true

  blob_properties {
    delete_retention_policy {
      days = 7
    }
    container_delete_retention_policy {
      days = 7
    }
  }

  # Bounds key-signed SAS, should shared keys ever be turned back on.
  sas_policy {
    expiration_period = "01.00:00:00"
  }

  tags = local.tags
}

resource "azurerm_storage_queue" "this" {
  for_each = toset(local.queues)

  name               = each.key
  storage_account_id = azurerm_storage_account.main.id
}

resource "azurerm_storage_container" "this" {
  #checkov:skip=CKV2_AZURE_21:Asks for azurerm_log_analytics_storage_insights, which needs an account key (shared keys are off); blob reads, writes and deletes reach Log Analytics through the diagnostic setting below.
  for_each = toset(local.containers)

  name                  = each.key
  storage_account_id    = azurerm_storage_account.main.id
  container_access_type = "private"
}

# Queue reads are left out: the triggers poll every few seconds per instance.
resource "azurerm_monitor_diagnostic_setting" "storage" {
  for_each = {
    blobServices  = ["StorageRead", "StorageWrite", "StorageDelete"]
    queueServices = ["StorageWrite", "StorageDelete"]
  }

  name                       = "to-log-analytics"
  target_resource_id         = "${azurerm_storage_account.main.id}/${each.key}/default"
  log_analytics_workspace_id = azurerm_log_analytics_workspace.main.id

  dynamic "enabled_log" {
    for_each = each.value
    content {
      category = enabled_log.value
    }
  }
}
