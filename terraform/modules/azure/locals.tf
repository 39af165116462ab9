locals {
  tags = merge({ app = "ferry", "managed-by" = "terraform" }, var.tags)

  storage_account_name = coalesce(var.storage_account_name, "${replace(var.name_prefix, "-", "")}st")

  # One function app per binary: a custom handler is one executable. The app named F is
  # packaged from infra/azure/F and infra/azure/F-* (scripts/package.sh), with
  # infra/azure/F-host.json as its host.json when there is one (query's).
  functions = {
    ingest    = var.functions.ingest
    transform = var.functions.transform
    rollup    = var.functions.rollup
    fanout    = var.functions.fanout
    query     = var.functions.query
  }

  # The trigger queues named in the function.json files, the poison queues the host moves
  # a message to after maxDequeueCount failures (<queue>-poison; webjobs-blobtrigger-poison
  # for the blob trigger), all created here so that each role below can be scoped to one queue.
  queues = [
    "ingest",
    "blob-created",
    "fanout",
    "ingest-poison",
    "blob-created-poison",
    "fanout-poison",
    "webjobs-blobtrigger-poison",
  ]

  # incoming: batch files (Event Grid reports their creation to blob-created).
  # azure-webjobs-*: the Functions host's own (leases, timer schedules, keys), created here
  # so the apps need no account-wide role. deploy-*: one Flex deployment container per app.
  containers = [
    "incoming",
    "eventgrid-deadletter",
    "azure-webjobs-hosts",
    "azure-webjobs-secrets",
    "deploy-ingest",
    "deploy-transform",
    "deploy-rollup",
    "deploy-fanout",
    "deploy-query",
  ]

  # Every queue role an app identity holds, one queue each. From the bindings in
  # infra/azure/*/function.json (tests/deploy/test_terraform_azure.py derives this table
  # from those files and compares): a queueTrigger reads its queue (Reader for the length
  # the scale controller polls, Processor to receive and delete) and writes its poison
  # queue; a queue output (the nudge) only sends; a blobTrigger writes its poison queue.
  # query's HTTP trigger needs none.
  queue_role_grants = [
    { app = "ingest", queue = "ingest", role = "Storage Queue Data Reader" },
    { app = "ingest", queue = "ingest", role = "Storage Queue Data Message Processor" },
    { app = "ingest", queue = "ingest-poison", role = "Storage Queue Data Message Sender" },
    { app = "ingest", queue = "fanout", role = "Storage Queue Data Message Sender" },
    { app = "transform", queue = "blob-created", role = "Storage Queue Data Reader" },
    { app = "transform", queue = "blob-created", role = "Storage Queue Data Message Processor" },
    { app = "transform", queue = "blob-created-poison", role = "Storage Queue Data Message Sender" },
    { app = "transform", queue = "webjobs-blobtrigger-poison", role = "Storage Queue Data Message Sender" },
    { app = "transform", queue = "fanout", role = "Storage Queue Data Message Sender" },
    { app = "rollup", queue = "fanout", role = "Storage Queue Data Message Sender" },
    { app = "fanout", queue = "fanout", role = "Storage Queue Data Reader" },
    { app = "fanout", queue = "fanout", role = "Storage Queue Data Message Processor" },
    { app = "fanout", queue = "fanout-poison", role = "Storage Queue Data Message Sender" },
  ]

  # Every blob role an app identity holds, one container each. Host storage
  # (AzureWebJobsStorage) needs blob read/write for leases, timer status and keys: Storage
  # Blob Data Owner, as the Functions identity-connection docs list it, but on the two host
  # containers instead of the account. Flex reads (and OneDeploy writes) the package through
  # the app's identity in its own deployment container. transform streams the batch files.
  container_role_grants = [
    { app = "ingest", container = "azure-webjobs-hosts", role = "Storage Blob Data Owner" },
    { app = "ingest", container = "azure-webjobs-secrets", role = "Storage Blob Data Owner" },
    { app = "ingest", container = "deploy-ingest", role = "Storage Blob Data Owner" },
    { app = "transform", container = "azure-webjobs-hosts", role = "Storage Blob Data Owner" },
    { app = "transform", container = "azure-webjobs-secrets", role = "Storage Blob Data Owner" },
    { app = "transform", container = "deploy-transform", role = "Storage Blob Data Owner" },
    { app = "transform", container = "incoming", role = "Storage Blob Data Reader" },
    { app = "rollup", container = "azure-webjobs-hosts", role = "Storage Blob Data Owner" },
    { app = "rollup", container = "azure-webjobs-secrets", role = "Storage Blob Data Owner" },
    { app = "rollup", container = "deploy-rollup", role = "Storage Blob Data Owner" },
    { app = "fanout", container = "azure-webjobs-hosts", role = "Storage Blob Data Owner" },
    { app = "fanout", container = "azure-webjobs-secrets", role = "Storage Blob Data Owner" },
    { app = "fanout", container = "deploy-fanout", role = "Storage Blob Data Owner" },
    { app = "query", container = "azure-webjobs-hosts", role = "Storage Blob Data Owner" },
    { app = "query", container = "azure-webjobs-secrets", role = "Storage Blob Data Owner" },
    { app = "query", container = "deploy-query", role = "Storage Blob Data Owner" },
  ]

  # Key Vault RBAC accepts a role assignment on a single secret.
  database_url_secret_name  = element(split("/", var.database_url_secret_id), 4)
  database_url_secret_scope = "${var.key_vault_id}/secrets/${local.database_url_secret_name}"
  webhook_keys_secret_name  = element(split("/", var.webhook_keys_secret_id), 4)
  webhook_keys_secret_scope = "${var.key_vault_id}/secrets/${local.webhook_keys_secret_name}"

  client_ids = { for name, identity in azurerm_user_assigned_identity.app : name => identity.client_id }

  # Settings every app gets. The connection strings are identity-based (no key anywhere):
  # <name>__accountName / __queueServiceUri say where, __credential and __clientId say that
  # the app's user-assigned identity signs in.
  shared_app_settings = {
    # azurerm writes AzureWebJobsStorage as a connection string with an empty AccountKey
    # whenever the deployment storage uses an identity (hashicorp/terraform-provider-azurerm
    # #29693, #30732); the host prefers it to the __ settings below and fails to start.
    # An explicit empty value replaces it, so the host falls back to the identity settings.
    AzureWebJobsStorage              = ""
    AzureWebJobsStorage__accountName = azurerm_storage_account.main.name
    AzureWebJobsStorage__credential  = "managedidentity"
    FERRY_LOG_FORMAT                 = "json"
    # Resolved by App Service from the vault (the app's system-assigned identity reads it);
    # the value is never in Terraform. Versionless: a new secret version is picked up.
    DATABASE_URL = "@Microsoft.KeyVault(SecretUri=${var.database_url_secret_id})"
  }

  # Settings naming the app's own identity. APPLICATIONINSIGHTS_AUTHENTICATION_STRING makes
  # the host send telemetry with Entra ID, which Application Insights requires (its local
  # authentication is off), so the connection string alone cannot write telemetry.
  # FERRY_FANOUT_STORAGE is the connection of the nudge outputs and of fanout's trigger, so
  # the four apps whose bindings name it get it; query's bindings name no storage at all.
  per_app_settings = {
    ingest = {
      AzureWebJobsStorage__clientId             = local.client_ids["ingest"]
      FERRY_FANOUT_STORAGE__queueServiceUri     = azurerm_storage_account.main.primary_queue_endpoint
      FERRY_FANOUT_STORAGE__credential          = "managedidentity"
      FERRY_FANOUT_STORAGE__clientId            = local.client_ids["ingest"]
      APPLICATIONINSIGHTS_AUTHENTICATION_STRING = "ClientId=${local.client_ids["ingest"]};Authorization=AAD"
    }
    transform = {
      AzureWebJobsStorage__clientId             = local.client_ids["transform"]
      FERRY_FANOUT_STORAGE__queueServiceUri     = azurerm_storage_account.main.primary_queue_endpoint
      FERRY_FANOUT_STORAGE__credential          = "managedidentity"
      FERRY_FANOUT_STORAGE__clientId            = local.client_ids["transform"]
      APPLICATIONINSIGHTS_AUTHENTICATION_STRING = "ClientId=${local.client_ids["transform"]};Authorization=AAD"
      # object_store streams the batch files with the same identity (IDENTITY_ENDPOINT).
      AZURE_STORAGE_ACCOUNT_NAME = azurerm_storage_account.main.name
      AZURE_CLIENT_ID            = local.client_ids["transform"]
    }
    rollup = {
      AzureWebJobsStorage__clientId             = local.client_ids["rollup"]
      FERRY_FANOUT_STORAGE__queueServiceUri     = azurerm_storage_account.main.primary_queue_endpoint
      FERRY_FANOUT_STORAGE__credential          = "managedidentity"
      FERRY_FANOUT_STORAGE__clientId            = local.client_ids["rollup"]
      APPLICATIONINSIGHTS_AUTHENTICATION_STRING = "ClientId=${local.client_ids["rollup"]};Authorization=AAD"
    }
    fanout = {
      AzureWebJobsStorage__clientId             = local.client_ids["fanout"]
      FERRY_FANOUT_STORAGE__queueServiceUri     = azurerm_storage_account.main.primary_queue_endpoint
      FERRY_FANOUT_STORAGE__credential          = "managedidentity"
      FERRY_FANOUT_STORAGE__clientId            = local.client_ids["fanout"]
      APPLICATIONINSIGHTS_AUTHENTICATION_STRING = "ClientId=${local.client_ids["fanout"]};Authorization=AAD"
      # The webhook keyring, resolved from the vault like DATABASE_URL (the role is
      # webhook_keys in identity.tf). fanout alone opens the sealed signing secrets.
      FERRY_WEBHOOK_KEYS = "@Microsoft.KeyVault(SecretUri=${var.webhook_keys_secret_id})"
    }
    query = {
      AzureWebJobsStorage__clientId             = local.client_ids["query"]
      APPLICATIONINSIGHTS_AUTHENTICATION_STRING = "ClientId=${local.client_ids["query"]};Authorization=AAD"
    }
  }

  # The origins browsers may call the query API from; unset when none (the handler then
  # sends no CORS headers).
  query_app_settings = length(var.query_cors_origins) == 0 ? {} : {
    FERRY_QUERY_CORS_ORIGINS = join(",", var.query_cors_origins)
  }

  action_group_ids = azurerm_monitor_action_group.alerts[*].id
}
