resource "azurerm_log_analytics_workspace" "main" {
  name                         = "${var.name_prefix}-logs"
  resource_group_name          = var.resource_group_name
  location                     = var.location
  sku                          = "PerGB2018"
  retention_in_days            = var.log_retention_in_days
  local_authentication_enabled = false
  tags                         = local.tags
}

resource "azurerm_application_insights" "main" {
  name                = "${var.name_prefix}-insights"
  resource_group_name = var.resource_group_name
  location            = var.location
  workspace_id        = azurerm_log_analytics_workspace.main.id
  application_type    = "other"
  # Telemetry only from identities holding Monitoring Metrics Publisher (the apps').
  local_authentication_disabled = true
  tags                          = local.tags
}

resource "azurerm_monitor_action_group" "alerts" {
  count = length(var.alert_emails) > 0 ? 1 : 0

  name                = "${var.name_prefix}-alerts"
  resource_group_name = var.resource_group_name
  short_name          = "ferry"

  dynamic "email_receiver" {
    for_each = var.alert_emails
    content {
      name                    = "email-${email_receiver.key}"
      email_address           = email_receiver.value
      use_common_alert_schema = true
    }
  }

  tags = local.tags
}

# Failed invocations of each app: a queue message that answered 500 (it is retried, then
# parked in the poison queue), a rollup/fanout tick that failed, or a query request answered
# with a server error. query answers its callers' mistakes (400, 401, 404) itself, and
# Application Insights may count those as failed requests too, so only its 5xx count.
resource "azurerm_monitor_scheduled_query_rules_alert_v2" "function_failures" {
  for_each = local.functions

  name                 = "${var.name_prefix}-${each.key}-failures"
  resource_group_name  = var.resource_group_name
  location             = var.location
  description          = "Failed ${each.key} invocations in the last 5 minutes."
  severity             = 2
  scopes               = [azurerm_application_insights.main.id]
  evaluation_frequency = "PT5M"
  window_duration      = "PT5M"

  criteria {
    query                   = <<-KQL
      requests
      | where cloud_RoleName =~ "${azurerm_function_app_flex_consumption.app[each.key].name}" and success == false${each.key == "query" ? " and toint(resultCode) >= 500" : ""}
    KQL
    time_aggregation_method = "Count"
    operator                = "GreaterThan"
    threshold               = 0

    failing_periods {
      minimum_failing_periods_to_trigger_alert = 1
      number_of_evaluation_periods             = 1
    }
  }

  dynamic "action" {
    for_each = length(local.action_group_ids) > 0 ? [1] : []
    content {
      action_groups = local.action_group_ids
    }
  }

  tags = local.tags
}

# Storage has no per-queue metric (QueueMessageCount is account-wide and daily), so poison
# queue depth cannot be alerted on. What can: the host's warning each time it parks a
# message ("Message has reached MaxDequeueCount of 5. Moving message to queue
# 'ingest-poison'."), split by app. Inspect the queue itself with az storage message peek.
resource "azurerm_monitor_scheduled_query_rules_alert_v2" "poison_messages" {
  name                 = "${var.name_prefix}-poison-messages"
  resource_group_name  = var.resource_group_name
  location             = var.location
  description          = "A message was moved to a poison queue (ingest-poison, blob-created-poison, fanout-poison or webjobs-blobtrigger-poison)."
  severity             = 1
  scopes               = [azurerm_application_insights.main.id]
  evaluation_frequency = "PT5M"
  window_duration      = "PT5M"

  criteria {
    query                   = <<-KQL
      traces
      | where message has "MaxDequeueCount" and message contains "-poison"
    KQL
    time_aggregation_method = "Count"
    operator                = "GreaterThan"
    threshold               = 0

    dimension {
      name     = "cloud_RoleName"
      operator = "Include"
      values   = ["*"]
    }

    failing_periods {
      minimum_failing_periods_to_trigger_alert = 1
      number_of_evaluation_periods             = 1
    }
  }

  dynamic "action" {
    for_each = length(local.action_group_ids) > 0 ? [1] : []
    content {
      action_groups = local.action_group_ids
    }
  }

  tags = local.tags
}

# Event Grid could not write to the blob-created queue: retried (DeliveryAttemptFailCount)
# and finally given up on (DeadLetteredCount; the event is in eventgrid-deadletter and its
# file was never loaded).
resource "azurerm_monitor_metric_alert" "eventgrid" {
  for_each = {
    dead_lettered   = { metric = "DeadLetteredCount", threshold = 0, severity = 1 }
    delivery_failed = { metric = "DeliveryAttemptFailCount", threshold = 5, severity = 2 }
  }

  name                = "${var.name_prefix}-eventgrid-${replace(each.key, "_", "-")}"
  resource_group_name = var.resource_group_name
  scopes              = [azurerm_eventgrid_system_topic.storage.id]
  description         = "Event Grid ${each.value.metric} above ${each.value.threshold} in 15 minutes on the storage account's system topic."
  severity            = each.value.severity
  frequency           = "PT5M"
  window_size         = "PT15M"

  criteria {
    metric_namespace = "Microsoft.EventGrid/systemTopics"
    metric_name      = each.value.metric
    aggregation      = "Total"
    operator         = "GreaterThan"
    threshold        = each.value.threshold
  }

  dynamic "action" {
    for_each = local.action_group_ids
    content {
      action_group_id = action.value
    }
  }

  tags = local.tags
}
