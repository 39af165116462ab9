# Optional PostgreSQL. The admin password is read from Key Vault for this run only and sent
# write-only: it is in no variable, plan or state. The apps never use it: their DATABASE_URL
# (an application role the operator creates) lives in its own secret.
ephemeral "azurerm_key_vault_secret" "database_admin_password" {
  count = var.create_database ? 1 : 0

  name         = var.database.administrator_password_secret_name
  key_vault_id = var.key_vault_id
}

resource "azurerm_postgresql_flexible_server" "main" {
  #checkov:skip=CKV2_AZURE_57:The apps run without VNet integration, so they reach the server over its public endpoint (firewall rules below); a private endpoint needs the VNet integration this module leaves to the platform team.
  count = var.create_database ? 1 : 0

  name                = "${var.name_prefix}-pg"
  resource_group_name = var.resource_group_name
  location            = var.location
  version             = var.database.version
  sku_name            = var.database.sku_name
  storage_mb          = var.database.storage_mb
  auto_grow_enabled   = true

  backup_retention_days        = var.database.backup_retention_days
  geo_redundant_backup_enabled = var.database.geo_redundant_backup_enabled

  # Flex Consumption instances have no fixed outbound addresses; see allow_azure_services.
  public_network_access_enabled = true

  # Password authentication stays on because ferry connects with a URL and password (sqlx);
  # an Entra admin can be added next to it.
  administrator_login               = var.database.administrator_login
  administrator_password_wo         = ephemeral.azurerm_key_vault_secret.database_admin_password[0].value
  administrator_password_wo_version = var.database.administrator_password_version

  authentication {
    password_auth_enabled         = true
    active_directory_auth_enabled = var.database.entra_administrator != null
    tenant_id                     = var.database.entra_administrator == null ? null : var.database.entra_administrator.tenant_id
  }

  # An elastic cluster (Citus): ferry's distribution plan is in docs/architecture.md ("Schema and scale-out").
  dynamic "cluster" {
    for_each = var.database.elastic_cluster_size == null ? [] : [var.database.elastic_cluster_size]
    content {
      size                  = cluster.value
      default_database_name = var.database.database_name
    }
  }

  dynamic "high_availability" {
    for_each = var.database.high_availability_mode == null ? [] : [var.database.high_availability_mode]
    content {
      mode = high_availability.value
    }
  }

  tags = local.tags

  lifecycle {
    # Azure picks the zone and moves it on failover.
    ignore_changes = [zone, high_availability[0].standby_availability_zone]
  }
}

# An elastic cluster creates its database itself (cluster.default_database_name).
resource "azurerm_postgresql_flexible_server_database" "ferry" {
  count = var.create_database && var.database.elastic_cluster_size == null ? 1 : 0

  name      = var.database.database_name
  server_id = azurerm_postgresql_flexible_server.main[0].id
  charset   = "UTF8"
  collation = "en_US.utf8"
}

# Extensions must be allow-listed before CREATE EXTENSION; ferry's migrations need hll.
resource "azurerm_postgresql_flexible_server_configuration" "extensions" {
  count = var.create_database ? 1 : 0

  name      = "azure.extensions"
  server_id = azurerm_postgresql_flexible_server.main[0].id
  value     = join(",", distinct([for e in var.database.extensions : upper(e)]))
}

# 0.0.0.0 is Azure's "allow public access from any Azure service": the only rule that
# admits Flex Consumption apps without VNet integration. It also admits other tenants'
# Azure resources, so the server's passwords carry the weight; turn it off with private
# networking.
resource "azurerm_postgresql_flexible_server_firewall_rule" "azure_services" {
  #checkov:skip=CKV2_AZURE_26:0.0.0.0 is the "allow Azure services" rule, the only one that admits Flex Consumption apps without VNet integration; it is optional (database.allow_azure_services) and the server requires TLS and a password.
  count = var.create_database && var.database.allow_azure_services ? 1 : 0

  name             = "allow-azure-services"
  server_id        = azurerm_postgresql_flexible_server.main[0].id
  start_ip_address = "0.0.0.0"
  end_ip_address   = "0.0.0.0"
}

resource "azurerm_postgresql_flexible_server_firewall_rule" "extra" {
  for_each = var.create_database ? var.database.firewall_rules : {}

  name             = each.key
  server_id        = azurerm_postgresql_flexible_server.main[0].id
  start_ip_address = each.value.start_ip_address
  end_ip_address   = each.value.end_ip_address
}

resource "azurerm_postgresql_flexible_server_active_directory_administrator" "main" {
  count = var.create_database && var.database.entra_administrator != null ? 1 : 0

  server_name         = azurerm_postgresql_flexible_server.main[0].name
  resource_group_name = var.resource_group_name
  object_id           = var.database.entra_administrator.object_id
  tenant_id           = var.database.entra_administrator.tenant_id
  principal_name      = var.database.entra_administrator.principal_name
  principal_type      = var.database.entra_administrator.principal_type
}
