resource "azurerm_eventgrid_system_topic" "storage" {
  name                = "${var.name_prefix}-storage-events"
  resource_group_name = var.resource_group_name
  location            = var.location
  source_resource_id  = azurerm_storage_account.main.id
  topic_type          = "Microsoft.Storage.StorageAccounts"

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.eventgrid.id]
  }

  tags = local.tags
}

# BlobCreated in incoming -> the blob-created queue -> transform's queue trigger. A queue
# endpoint needs no function key and no validation handshake, so the subscription can exist
# before any code is deployed, and failed objects get the queue's retries and poison queue.
# (transform-blob, the Event Grid blob trigger, would need a webhook subscription with the
# app's blobs_extension key; it is not wired here.)
resource "azurerm_eventgrid_system_topic_event_subscription" "blob_created" {
  name                  = "blob-created"
  system_topic          = azurerm_eventgrid_system_topic.storage.name
  resource_group_name   = var.resource_group_name
  event_delivery_schema = "EventGridSchema"
  included_event_types  = ["Microsoft.Storage.BlobCreated"]

  subject_filter {
    subject_begins_with = "/blobServices/default/containers/incoming/blobs/"
  }

  storage_queue_endpoint {
    storage_account_id = azurerm_storage_account.main.id
    queue_name         = azurerm_storage_queue.this["blob-created"].name
    # -1: never expire. The queue default (7 days) would drop notifications silently if
    # transform were down for a week; a poison queue is the only way out.
    queue_message_time_to_live_in_seconds = -1
  }

  delivery_identity {
    type                   = "UserAssigned"
    user_assigned_identity = azurerm_user_assigned_identity.eventgrid.id
  }

  retry_policy {
    max_delivery_attempts = var.event_grid.max_delivery_attempts
    event_time_to_live    = var.event_grid.event_time_to_live_minutes
  }

  dead_letter_identity {
    type                   = "UserAssigned"
    user_assigned_identity = azurerm_user_assigned_identity.eventgrid.id
  }

  storage_blob_dead_letter_destination {
    storage_account_id          = azurerm_storage_account.main.id
    storage_blob_container_name = azurerm_storage_container.this["eventgrid-deadletter"].name
  }

  depends_on = [
    azurerm_role_assignment.eventgrid_delivery,
    azurerm_role_assignment.eventgrid_deadletter,
  ]
}

resource "azurerm_monitor_diagnostic_setting" "eventgrid" {
  name                       = "to-log-analytics"
  target_resource_id         = azurerm_eventgrid_system_topic.storage.id
  log_analytics_workspace_id = azurerm_log_analytics_workspace.main.id

  enabled_log {
    category = "DeliveryFailures"
  }
}
