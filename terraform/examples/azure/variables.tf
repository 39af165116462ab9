variable "subscription_id" {
  description = "Subscription to deploy into."
  type        = string
  nullable    = false
}

variable "location" {
  description = "Azure region (short name) offering Flex Consumption, e.g. \"westeurope\"."
  type        = string
  default     = "westeurope"
  nullable    = false
}

variable "name_prefix" {
  description = "Prefix of every resource name; function app and storage account names are global, so make it unique."
  type        = string
  default     = "ferry-demo"
  nullable    = false
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default = {
    env   = "demo"
    owner = "platform"
  }
  nullable = false
}

variable "key_vault_id" {
  description = "Resource ID of the Key Vault (RBAC mode) holding the secrets; created before apply (see README)."
  type        = string
  nullable    = false
}

variable "database_url_secret_id" {
  description = "Versionless ID of the secret holding the PostgreSQL URL: https://<vault>.vault.azure.net/secrets/ferry-database-url."
  type        = string
  nullable    = false
}

variable "webhook_keys_secret_id" {
  description = "Versionless ID of the secret holding the webhook keyring (from ferry secrets new-key, see README): https://<vault>.vault.azure.net/secrets/ferry-webhook-keys. Only the fanout app reads it."
  type        = string
  nullable    = false
}

variable "create_database" {
  description = "Create a PostgreSQL flexible server (true) or bring your own (false)."
  type        = bool
  default     = false
  nullable    = false
}

variable "database" {
  description = "Flexible server settings when create_database is true; see the module's database variable."
  type = object({
    version                            = optional(string, "16")
    sku_name                           = optional(string, "GP_Standard_D2ds_v5")
    elastic_cluster_size               = optional(number)
    administrator_password_secret_name = optional(string, "ferry-pg-admin-password")
    administrator_password_version     = optional(number, 1)
    firewall_rules = optional(map(object({
      start_ip_address = string
      end_ip_address   = string
    })), {})
  })
  default  = {}
  nullable = false
}

variable "functions" {
  description = "Per-app scale and settings; see the module's functions variable."
  type = object({
    ingest = optional(object({
      maximum_instance_count = optional(number, 10)
      instance_memory_in_mb  = optional(number, 2048)
      app_settings           = optional(map(string), {})
    }), {})
    transform = optional(object({
      maximum_instance_count = optional(number, 5)
      instance_memory_in_mb  = optional(number, 2048)
      app_settings           = optional(map(string), {})
    }), {})
    rollup = optional(object({
      maximum_instance_count = optional(number, 1)
      instance_memory_in_mb  = optional(number, 2048)
      app_settings           = optional(map(string), {})
    }), {})
    fanout = optional(object({
      maximum_instance_count = optional(number, 3)
      instance_memory_in_mb  = optional(number, 2048)
      app_settings           = optional(map(string), {})
    }), {})
    query = optional(object({
      maximum_instance_count = optional(number, 5)
      instance_memory_in_mb  = optional(number, 2048)
      app_settings           = optional(map(string), {})
    }), {})
  })
  default  = {}
  nullable = false
}

variable "app_settings" {
  description = "App settings for all five apps, e.g. RUST_LOG."
  type        = map(string)
  default     = {}
  nullable    = false
}

variable "query_cors_origins" {
  description = "Origins a browser may call the query API from, e.g. [\"https://shop.example\"] (or [\"*\"]). Empty: no CORS headers."
  type        = list(string)
  default     = []
  nullable    = false
}

variable "alert_emails" {
  description = "Who the alerts e-mail."
  type        = list(string)
  default     = []
  nullable    = false
}
