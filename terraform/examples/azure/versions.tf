terraform {
  required_version = ">= 1.11"

  required_providers {
    azurerm = {
      source  = "hashicorp/azurerm"
      version = "~> 4.60"
    }
  }
}

provider "azurerm" {
  subscription_id = var.subscription_id

  # The storage account has shared keys off, so containers and queues are managed through
  # Azure Resource Manager and Entra ID only; no data-plane lookups that need a key.
  storage_use_azuread = true

  features {
    storage {
      data_plane_available = false
    }
  }
}
