resource "azurerm_resource_group" "ferry" {
  name     = "${var.name_prefix}-rg"
  location = var.location
  tags     = var.tags
}

module "ferry" {
  source = "../../modules/azure"

  name_prefix         = var.name_prefix
  resource_group_name = azurerm_resource_group.ferry.name
  location            = azurerm_resource_group.ferry.location
  tags                = var.tags

  key_vault_id           = var.key_vault_id
  database_url_secret_id = var.database_url_secret_id
  # Like the database URL, the keyring is set in the vault by the operator (README step 2),
  # never through a variable or the state, and outlives this root with the vault.
  webhook_keys_secret_id = var.webhook_keys_secret_id

  create_database = var.create_database
  database        = var.database

  functions          = var.functions
  app_settings       = var.app_settings
  query_cors_origins = var.query_cors_origins
  alert_emails       = var.alert_emails
}
