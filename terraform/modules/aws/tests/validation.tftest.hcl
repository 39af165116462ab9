# Inputs the module must refuse. Plans only, against a mocked provider (offline).

mock_provider "aws" {}

variables {
  name_prefix             = "ferry-test"
  package_dir             = "tests/package"
  database_secret_arn     = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:ferry-db-AbCdEf"
  webhook_keys_secret_arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:ferry-webhook-keys-GhIjKl"
}

run "accepts_the_defaults" {
  command = plan
}

run "rejects_uppercase_name_prefix" {
  command = plan
  variables {
    name_prefix = "Ferry_Prod"
  }
  expect_failures = [var.name_prefix]
}

run "rejects_name_prefix_too_long_for_role_names" {
  command = plan
  variables {
    name_prefix = "ferry-a-prefix-much-too-long-for-iam"
  }
  expect_failures = [var.name_prefix]
}

run "rejects_unknown_architecture" {
  command = plan
  variables {
    architecture = "aarch64"
  }
  expect_failures = [var.architecture]
}

run "rejects_timeout_above_lambda_maximum" {
  command = plan
  variables {
    functions = { transform = { timeout = 901 } }
  }
  expect_failures = [var.functions]
}

run "rejects_maximum_concurrency_below_two" {
  command = plan
  variables {
    functions = { ingest = { maximum_concurrency = 1 } }
  }
  expect_failures = [var.functions]
}

run "rejects_visibility_timeout_below_six_times_the_timeout" {
  command = plan
  variables {
    functions = { ingest = { timeout = 60, visibility_timeout = 359 } }
  }
  expect_failures = [var.functions]
}

run "accepts_visibility_timeout_of_six_times_the_timeout" {
  command = plan
  variables {
    functions = { ingest = { timeout = 60, visibility_timeout = 360 } }
  }
}

run "rejects_reserved_concurrency_below_the_queue_cap" {
  command = plan
  variables {
    functions = { fanout = { reserved_concurrency = 2, maximum_concurrency = 3 } }
  }
  expect_failures = [var.functions]
}

run "rejects_a_stopped_rollup" {
  command = plan
  variables {
    functions = { rollup = { reserved_concurrency = 0 } }
  }
  expect_failures = [var.functions]
}

run "rejects_batch_size_above_ten_without_a_window" {
  command = plan
  variables {
    functions = { ingest = { batch_size = 100 } }
  }
  expect_failures = [var.functions]
}

run "rejects_database_url_in_function_environment" {
  command = plan
  variables {
    functions = { ingest = { environment = { DATABASE_URL = "postgres://u:p@db/ferry" } } }
  }
  expect_failures = [var.functions]
}

run "rejects_database_url_in_common_environment" {
  command = plan
  variables {
    environment = { DATABASE_URL = "postgres://u:p@db/ferry" }
  }
  expect_failures = [var.environment]
}

run "rejects_a_database_secret_that_is_not_a_secret_arn" {
  command = plan
  variables {
    database_secret_arn = "postgres://u:p@db/ferry"
  }
  expect_failures = [var.database_secret_arn]
}

# A keyring entry (32 zero bytes: a placeholder, not a key) where the ARN belongs.
run "rejects_a_keyring_instead_of_the_webhook_keys_secret_arn" {
  command = plan
  variables {
    webhook_keys_secret_arn = "k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
  }
  expect_failures = [var.webhook_keys_secret_arn]
}

run "rejects_a_parameter_store_arn_for_the_webhook_keys" {
  command = plan
  variables {
    webhook_keys_secret_arn = "arn:aws:ssm:eu-west-1:123456789012:parameter/ferry/webhook-keys"
  }
  expect_failures = [var.webhook_keys_secret_arn]
}

run "rejects_the_database_secret_as_the_keyring_secret" {
  command = plan
  variables {
    webhook_keys_secret_arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:ferry-db-AbCdEf"
  }
  expect_failures = [aws_iam_role_policy.fn]
}

run "rejects_the_keyring_in_common_environment" {
  command = plan
  variables {
    environment = { FERRY_WEBHOOK_KEYS = "k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=" }
  }
  expect_failures = [var.environment]
}

run "rejects_another_keyring_secret_in_common_environment" {
  command = plan
  variables {
    environment = { FERRY_WEBHOOK_KEYS_SECRET_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:other-AbCdEf" }
  }
  expect_failures = [var.environment]
}

run "rejects_the_keyring_in_fanout_environment" {
  command = plan
  variables {
    functions = { fanout = { environment = { FERRY_WEBHOOK_KEYS = "k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=" } } }
  }
  expect_failures = [var.functions]
}

run "rejects_a_keyring_file_in_fanout_environment" {
  command = plan
  variables {
    functions = { fanout = { environment = { FERRY_WEBHOOK_KEYS_FILE = "/var/task/webhook-keys" } } }
  }
  expect_failures = [var.functions]
}

run "rejects_a_kms_alias_for_the_webhook_keys" {
  command = plan
  variables {
    webhook_keys_kms_key_arn = "alias/ferry-webhook-keys"
  }
  expect_failures = [var.webhook_keys_kms_key_arn]
}

run "rejects_a_port_out_of_range" {
  command = plan
  variables {
    database_port = 70000
  }
  expect_failures = [var.database_port]
}

run "rejects_an_unknown_sslmode" {
  command = plan
  variables {
    database_sslmode = "required"
  }
  expect_failures = [var.database_sslmode]
}

run "rejects_a_kms_alias" {
  command = plan
  variables {
    kms_key_arn = "alias/aws/secretsmanager"
  }
  expect_failures = [var.kms_key_arn]
}

run "rejects_a_retention_cloudwatch_does_not_offer" {
  command = plan
  variables {
    log_retention_days = 42
  }
  expect_failures = [var.log_retention_days]
}

run "rejects_vpc_config_without_subnets" {
  command = plan
  variables {
    vpc_config = { subnet_ids = [], security_group_ids = ["sg-0123abcd"] }
  }
  expect_failures = [var.vpc_config]
}

run "rejects_a_query_reservation_of_zero" {
  command = plan
  variables {
    functions = { query = { reserved_concurrency = 0 } }
  }
  expect_failures = [var.functions]
}

run "accepts_an_unreserved_query" {
  command = plan
  variables {
    functions = { query = { reserved_concurrency = null } }
  }
}

run "rejects_database_url_in_query_environment" {
  command = plan
  variables {
    functions = { query = { environment = { DATABASE_URL = "postgres://u:p@db/ferry" } } }
  }
  expect_failures = [var.functions]
}

run "accepts_cors_origins_and_the_wildcard" {
  command = plan
  variables {
    query_cors_origins = ["https://shop.example", "http://localhost:5173", "*"]
  }
}

run "rejects_a_cors_origin_with_a_trailing_slash" {
  command = plan
  variables {
    query_cors_origins = ["https://shop.example/"]
  }
  expect_failures = [var.query_cors_origins]
}

run "rejects_a_cors_origin_without_a_scheme" {
  command = plan
  variables {
    query_cors_origins = ["shop.example"]
  }
  expect_failures = [var.query_cors_origins]
}

run "rejects_cors_origins_joined_by_hand" {
  command = plan
  variables {
    query_cors_origins = ["https://a.example,https://b.example"]
  }
  expect_failures = [var.query_cors_origins]
}

run "rejects_a_max_receive_count_of_zero" {
  command = plan
  variables {
    queue_max_receive_count = 0
  }
  expect_failures = [var.queue_max_receive_count]
}

run "rejects_an_alarm_topic_that_is_not_an_sns_arn" {
  command = plan
  variables {
    alarm_topic_arn = "ferry-alarms"
  }
  expect_failures = [var.alarm_topic_arn]
}
