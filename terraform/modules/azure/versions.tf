terraform {
  # 1.11: write-only arguments (administrator_password_wo) fed from an ephemeral Key Vault
  # read, so the database admin password never lands in a variable, the plan or the state.
  required_version = ">= 1.11"

  required_providers {
    # Only azurerm. 4.60.0 is the first release with everything used here:
    # runtime_name "custom" on Flex Consumption (since 4.21), maximum_instance_count below 40
    # (4.58, needed for the single rollup instance) and the flexible server `cluster` block
    # (4.60, elastic clusters). 5.0 renames arguments used here (Application Insights'
    # local_authentication_disabled), hence < 5.
    azurerm = {
      source  = "hashicorp/azurerm"
      version = "~> 4.60"
    }
  }
}
