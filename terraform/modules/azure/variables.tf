variable "name_prefix" {
  description = "Prefix of every resource name, e.g. \"ferry-prod\". Function apps are named \"<prefix>-<function>\"; the storage account is the prefix without hyphens plus \"st\" unless storage_account_name is set."
  type        = string
  nullable    = false

  validation {
    # 3-16 characters: "<prefix>-transform" stays within the 32 characters a Functions host ID
    # is cut to (apps sharing a storage account must differ in them), and the prefix without
    # hyphens plus "st" is a valid storage account name (3-24 lowercase letters and digits).
    condition     = can(regex("^[a-z][a-z0-9-]{1,14}[a-z0-9]$", var.name_prefix)) && !strcontains(var.name_prefix, "--")
    error_message = "name_prefix must be 3-16 lowercase letters, digits or single hyphens, start with a letter and end with a letter or digit."
  }
}

variable "resource_group_name" {
  description = "Existing resource group that receives every resource."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^[-\\w._()]{1,89}[-\\w_()]$", var.resource_group_name))
    error_message = "resource_group_name must be 1-90 letters, digits, underscores, hyphens, periods or parentheses, not ending with a period."
  }
}

variable "location" {
  description = "Azure region in its short form, e.g. \"westeurope\". It must offer the Flex Consumption plan (az functionapp list-flexconsumption-locations)."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^[a-z][a-z0-9]+$", var.location))
    error_message = "location must be the short region name (lowercase letters and digits, e.g. \"westeurope\"), not the display name."
  }
}

variable "tags" {
  description = "Tags merged onto every taggable resource (azurerm has no provider-level default tags). The module adds managed-by = terraform and app = ferry unless given here."
  type        = map(string)
  default     = {}
  nullable    = false
}

variable "storage_account_name" {
  description = "Name of the storage account (globally unique, 3-24 lowercase letters and digits). null derives it from name_prefix."
  type        = string
  default     = null

  validation {
    condition     = var.storage_account_name == null ? true : can(regex("^[a-z0-9]{3,24}$", var.storage_account_name))
    error_message = "storage_account_name must be 3-24 lowercase letters and digits."
  }
}

variable "storage_replication_type" {
  description = "Replication of the storage account holding the queues, the incoming container and the app packages."
  type        = string
  default     = "ZRS"
  nullable    = false

  validation {
    condition     = contains(["LRS", "ZRS", "GRS", "RAGRS", "GZRS", "RAGZRS"], var.storage_replication_type)
    error_message = "storage_replication_type must be one of LRS, ZRS, GRS, RAGRS, GZRS, RAGZRS."
  }
}

variable "zone_redundant" {
  description = "Spread each app's instances over availability zones (Flex Consumption zone redundancy; only in some regions, and storage_replication_type must then be ZRS, GZRS or RAGZRS)."
  type        = bool
  default     = false
  nullable    = false

  validation {
    condition     = !var.zone_redundant || contains(["ZRS", "GZRS", "RAGZRS"], var.storage_replication_type)
    error_message = "zone_redundant needs a zone-redundant storage account: storage_replication_type ZRS, GZRS or RAGZRS."
  }
}

variable "functions" {
  description = <<-EOT
    Per-app settings; every attribute has a default.
    maximum_instance_count bounds the app's scale-out (and with FERRY_DB_MAX_CONNECTIONS its
    database connections); instance_memory_in_mb is 512, 2048 or 4096; app_settings are merged
    over the module's settings (secrets do not belong here: use DATABASE_URL's Key Vault secret).
  EOT
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
      # One run at a time is all the rollup can use: a second finds the watermark locked.
      maximum_instance_count = optional(number, 1)
      instance_memory_in_mb  = optional(number, 2048)
      app_settings           = optional(map(string), {})
    }), {})
    fanout = optional(object({
      # More instances do not deliver faster than the per-endpoint bound.
      maximum_instance_count = optional(number, 3)
      instance_memory_in_mb  = optional(number, 2048)
      app_settings           = optional(map(string), {})
    }), {})
    query = optional(object({
      # Anyone can send requests to the app, and each one reaches the database (if only to
      # check its key); the instance cap bounds the connections they can open.
      maximum_instance_count = optional(number, 5)
      instance_memory_in_mb  = optional(number, 2048)
      app_settings           = optional(map(string), {})
    }), {})
  })
  default  = {}
  nullable = false

  validation {
    condition = alltrue([
      for f in [var.functions.ingest, var.functions.transform, var.functions.rollup, var.functions.fanout, var.functions.query] :
      f.maximum_instance_count >= 1 && f.maximum_instance_count <= 1000 && floor(f.maximum_instance_count) == f.maximum_instance_count
    ])
    error_message = "functions.*.maximum_instance_count must be a whole number from 1 to 1000."
  }

  validation {
    condition     = var.functions.rollup.maximum_instance_count == 1
    error_message = "functions.rollup.maximum_instance_count must be 1: a second rollup instance finds the watermark locked and does nothing."
  }

  validation {
    condition = alltrue([
      for f in [var.functions.ingest, var.functions.transform, var.functions.rollup, var.functions.fanout, var.functions.query] :
      contains([512, 2048, 4096], f.instance_memory_in_mb)
    ])
    error_message = "functions.*.instance_memory_in_mb must be 512, 2048 or 4096 (the Flex Consumption instance sizes)."
  }

  validation {
    condition = alltrue(flatten([
      for f in [var.functions.ingest, var.functions.transform, var.functions.rollup, var.functions.fanout, var.functions.query] : [
        for k in keys(f.app_settings) :
        !can(regex("(?i)(^DATABASE_URL$|PASSWORD|SECRET|KEY|CONNECTION_?STRING|^AzureWebJobsStorage|^FERRY_FANOUT_STORAGE|^FUNCTIONS_|^APPLICATIONINSIGHTS_)", k))
      ]
    ]))
    error_message = "functions.*.app_settings must not set DATABASE_URL, secret-looking names (PASSWORD, SECRET, KEY, CONNECTION_STRING) or the settings the module owns (AzureWebJobsStorage*, FERRY_FANOUT_STORAGE*, FUNCTIONS_*, APPLICATIONINSIGHTS_*)."
  }
}

variable "app_settings" {
  description = "App settings for every app (e.g. RUST_LOG, FERRY_DB_MAX_CONNECTIONS), merged over the module's own and under functions.<fn>.app_settings."
  type        = map(string)
  default     = {}
  nullable    = false

  validation {
    condition = alltrue([
      for k in keys(var.app_settings) :
      !can(regex("(?i)(^DATABASE_URL$|PASSWORD|SECRET|KEY|CONNECTION_?STRING|^AzureWebJobsStorage|^FERRY_FANOUT_STORAGE|^FUNCTIONS_|^APPLICATIONINSIGHTS_)", k))
    ])
    error_message = "app_settings must not set DATABASE_URL, secret-looking names (PASSWORD, SECRET, KEY, CONNECTION_STRING) or the settings the module owns (AzureWebJobsStorage*, FERRY_FANOUT_STORAGE*, FUNCTIONS_*, APPLICATIONINSIGHTS_*)."
  }
}

variable "query_cors_origins" {
  description = "Origins a browser may call the query API from (e.g. \"https://shop.example\"), or [\"*\"] for any: the query app's FERRY_QUERY_CORS_ORIGINS, comma-separated (the handler answers CORS itself; the platform's CORS setting stays empty). Empty: no CORS headers."
  type        = list(string)
  default     = []
  nullable    = false

  validation {
    # What the handler accepts: scheme://host[:port], no path and no trailing slash (a
    # browser's Origin header never has one), or *.
    condition     = alltrue([for o in var.query_cors_origins : o == "*" || can(regex("^https?://[^/\\s,*]+$", o))])
    error_message = "query_cors_origins must hold origins as browsers send them, scheme://host[:port] (http or https, no path, no trailing slash), or \"*\"."
  }
}

variable "custom_runtime_version" {
  description = "Flex Consumption runtime version of the \"custom\" runtime (custom handlers); see az functionapp list-flexconsumption-runtimes -l <location> --runtime custom."
  type        = string
  default     = "1.0"
  nullable    = false
}

variable "key_vault_id" {
  description = "Resource ID of the Key Vault (RBAC authorization mode) holding the database_url and webhook keyring secrets and, with create_database, the admin password secret. The module does not create the vault: its purge protection outlives any one deployment."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^/subscriptions/[0-9a-fA-F-]{36}/resourceGroups/[^/]+/providers/Microsoft\\.KeyVault/vaults/[a-zA-Z0-9-]{3,24}$", var.key_vault_id))
    error_message = "key_vault_id must be a Key Vault resource ID (/subscriptions/<id>/resourceGroups/<rg>/providers/Microsoft.KeyVault/vaults/<name>)."
  }
}

variable "database_url_secret_id" {
  description = "Versionless ID of the Key Vault secret holding the PostgreSQL URL (https://<vault>.vault.azure.net/secrets/<name>). The apps resolve it as a Key Vault reference, so a new secret version reaches them without a Terraform run."
  type        = string
  nullable    = false

  validation {
    # Versionless: a pinned version would keep the apps on an old password after rotation.
    condition     = can(regex("^https://[a-zA-Z0-9-]{3,24}\\.vault\\.[a-z0-9.]+/secrets/[a-zA-Z0-9-]{1,127}$", var.database_url_secret_id))
    error_message = "database_url_secret_id must be a versionless secret ID: https://<vault>.vault.azure.net/secrets/<name>, without a version segment or trailing slash."
  }

  validation {
    condition     = try(lower(regex("^https://([a-zA-Z0-9-]+)\\.", var.database_url_secret_id)[0]) == lower(element(split("/", var.key_vault_id), 8)), false)
    error_message = "database_url_secret_id must name a secret in the vault given as key_vault_id (the role assignment is scoped to that vault's secret)."
  }
}

variable "webhook_keys_secret_id" {
  description = "Versionless ID of the Key Vault secret holding the webhook keyring (https://<vault>.vault.azure.net/secrets/<name>): entries \"<key id>:<base64 of 32 bytes>\" separated by commas or whitespace (ferry secrets new-key <id> prints one); the first seals new signing secrets, every one opens. Only the fanout app gets it (FERRY_WEBHOOK_KEYS, a Key Vault reference) and may read it."
  type        = string
  nullable    = false

  validation {
    # Versionless: a pinned version would keep fanout on an old keyring after a rotation.
    condition     = can(regex("^https://[a-zA-Z0-9-]{3,24}\\.vault\\.[a-z0-9.]+/secrets/[a-zA-Z0-9-]{1,127}$", var.webhook_keys_secret_id))
    error_message = "webhook_keys_secret_id must be a versionless secret ID: https://<vault>.vault.azure.net/secrets/<name>, without a version segment or trailing slash."
  }

  validation {
    condition     = try(lower(regex("^https://([a-zA-Z0-9-]+)\\.", var.webhook_keys_secret_id)[0]) == lower(element(split("/", var.key_vault_id), 8)), false)
    error_message = "webhook_keys_secret_id must name a secret in the vault given as key_vault_id (the role assignment is scoped to that vault's secret)."
  }

  validation {
    # Every app reads the database_url secret; the keyring must be readable by fanout alone.
    condition     = lower(var.webhook_keys_secret_id) != lower(var.database_url_secret_id)
    error_message = "webhook_keys_secret_id must be a secret of its own, not database_url_secret_id: every app reads that one, and only fanout may read the keyring."
  }
}

variable "log_retention_in_days" {
  description = "Retention of the Log Analytics workspace behind Application Insights."
  type        = number
  default     = 90
  nullable    = false

  validation {
    condition     = var.log_retention_in_days >= 30 && var.log_retention_in_days <= 730 && floor(var.log_retention_in_days) == var.log_retention_in_days
    error_message = "log_retention_in_days must be a whole number from 30 to 730."
  }
}

variable "alert_emails" {
  description = "Addresses the alerts notify through one action group. Empty: the alerts still fire (visible in Azure Monitor) but notify nobody."
  type        = list(string)
  default     = []
  nullable    = false

  validation {
    condition     = alltrue([for e in var.alert_emails : can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", e))])
    error_message = "alert_emails must hold e-mail addresses."
  }
}

variable "event_grid" {
  description = "Delivery of BlobCreated events to the blob-created queue: attempts and event time to live (minutes) before an event is dead-lettered to the eventgrid-deadletter container."
  type = object({
    max_delivery_attempts      = optional(number, 30)
    event_time_to_live_minutes = optional(number, 1440)
  })
  default  = {}
  nullable = false

  validation {
    condition     = var.event_grid.max_delivery_attempts >= 1 && var.event_grid.max_delivery_attempts <= 30
    error_message = "event_grid.max_delivery_attempts must be from 1 to 30."
  }

  validation {
    condition     = var.event_grid.event_time_to_live_minutes >= 1 && var.event_grid.event_time_to_live_minutes <= 1440
    error_message = "event_grid.event_time_to_live_minutes must be from 1 to 1440."
  }
}

variable "create_database" {
  description = "Create an Azure Database for PostgreSQL flexible server (see database). false: bring your own server and put its URL in the database_url secret."
  type        = bool
  default     = false
  nullable    = false
}

variable "database" {
  description = <<-EOT
    The flexible server created when create_database is true.
    administrator_password_secret_name names a secret in key_vault_id holding the admin password; it is read
    ephemerally and sent write-only, so it is in no variable, plan or state (bump administrator_password_version
    after changing the secret). elastic_cluster_size (1-20 nodes) makes it an elastic cluster (Citus), which
    needs version 17 or later. entra_administrator adds a Microsoft Entra admin next to the password admin.
    extensions is the azure.extensions allow-list; ferry's migrations need HLL.
  EOT
  type = object({
    version                            = optional(string, "16")
    sku_name                           = optional(string, "GP_Standard_D2ds_v5")
    storage_mb                         = optional(number, 65536)
    backup_retention_days              = optional(number, 14)
    geo_redundant_backup_enabled       = optional(bool, true)
    high_availability_mode             = optional(string)
    elastic_cluster_size               = optional(number)
    database_name                      = optional(string, "ferry")
    administrator_login                = optional(string, "ferryadmin")
    administrator_password_secret_name = optional(string)
    administrator_password_version     = optional(number, 1)
    entra_administrator = optional(object({
      object_id      = string
      principal_name = string
      principal_type = string
      tenant_id      = string
    }))
    allow_azure_services = optional(bool, true)
    firewall_rules = optional(map(object({
      start_ip_address = string
      end_ip_address   = string
    })), {})
    extensions = optional(list(string), ["HLL"])
  })
  default  = {}
  nullable = false

  validation {
    condition     = contains(["13", "14", "15", "16", "17", "18"], var.database.version)
    error_message = "database.version must be one of 13 to 18."
  }

  validation {
    condition = var.database.elastic_cluster_size == null ? true : (
      tonumber(var.database.version) >= 17 &&
      var.database.elastic_cluster_size >= 1 && var.database.elastic_cluster_size <= 20 &&
      floor(var.database.elastic_cluster_size) == var.database.elastic_cluster_size
    )
    error_message = "database.elastic_cluster_size (an elastic cluster) needs database.version 17 or later and a whole number of 1 to 20 nodes."
  }

  validation {
    condition     = !var.create_database || var.database.administrator_password_secret_name != null
    error_message = "create_database needs database.administrator_password_secret_name: the Key Vault secret (in key_vault_id) holding the admin password."
  }

  validation {
    condition     = var.database.administrator_password_secret_name == null ? true : can(regex("^[a-zA-Z0-9-]{1,127}$", var.database.administrator_password_secret_name))
    error_message = "database.administrator_password_secret_name must be a Key Vault secret name (1-127 letters, digits or hyphens)."
  }

  validation {
    condition     = var.database.high_availability_mode == null ? true : contains(["SameZone", "ZoneRedundant"], var.database.high_availability_mode)
    error_message = "database.high_availability_mode must be null, \"SameZone\" or \"ZoneRedundant\"."
  }

  validation {
    condition     = var.database.backup_retention_days >= 7 && var.database.backup_retention_days <= 35
    error_message = "database.backup_retention_days must be from 7 to 35."
  }

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_]{0,62}$", var.database.database_name))
    error_message = "database.database_name must be a lowercase PostgreSQL identifier."
  }

  validation {
    # azure_superuser, azure_pg_admin, admin, administrator, root, guest and public are
    # refused by the service, as are names starting with pg_.
    condition     = can(regex("^[a-z][a-z0-9_]{0,62}$", var.database.administrator_login)) && !contains(["azure_superuser", "azure_pg_admin", "admin", "administrator", "root", "guest", "public"], var.database.administrator_login) && !startswith(var.database.administrator_login, "pg_")
    error_message = "database.administrator_login must be a lowercase identifier other than admin, administrator, root, guest, public, azure_* reserved names or pg_*."
  }

  validation {
    condition     = var.database.entra_administrator == null ? true : contains(["User", "Group", "ServicePrincipal"], var.database.entra_administrator.principal_type)
    error_message = "database.entra_administrator.principal_type must be User, Group or ServicePrincipal."
  }

  validation {
    condition     = contains([for e in var.database.extensions : upper(e)], "HLL")
    error_message = "database.extensions must include HLL: ferry's rollup migration creates the hll extension."
  }
}
