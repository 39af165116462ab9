variable "name_prefix" {
  description = "Prefix of every resource name (functions, roles, queues, schedules, alarms, the bucket), e.g. \"ferry-prod\"."
  type        = string
  nullable    = false

  validation {
    # 2-32 characters keeps "<prefix>-transform-dlq-schedule"-style names under the
    # 64-character limits of IAM roles and Lambda functions.
    condition     = can(regex("^[a-z][a-z0-9-]{0,30}[a-z0-9]$", var.name_prefix))
    error_message = "name_prefix must be 2-32 lowercase letters, digits or hyphens, start with a letter and not end with a hyphen."
  }
}

variable "package_dir" {
  description = "Directory holding ingest.zip, transform.zip, rollup.zip, fanout.zip and query.zip (each a `bootstrap` executable), as written by scripts/package.sh (dist/lambda)."
  type        = string
  nullable    = false
}

variable "architecture" {
  description = "Instruction set of the packaged binaries: x86_64 (what scripts/package.sh builds) or arm64."
  type        = string
  default     = "x86_64"
  nullable    = false

  validation {
    condition     = contains(["x86_64", "arm64"], var.architecture)
    error_message = "architecture must be \"x86_64\" or \"arm64\"."
  }
}

variable "functions" {
  description = <<-EOT
    Per-function settings; every attribute has a default.
    memory_size (MB), timeout (s), reserved_concurrency (null = unreserved), environment (merged over the module's variables).
    Queue-triggered functions (ingest, transform, fanout) also take batch_size, maximum_batching_window (s),
    maximum_concurrency (the event source mapping's cap, >= 2: the knob that bounds database connections)
    and visibility_timeout (s, default 6 x timeout, never less). query, behind a public URL, has no such cap:
    its reserved_concurrency (default 10, at least 1) is what bounds its instances and their connections.
  EOT
  type = object({
    ingest = optional(object({
      memory_size             = optional(number, 512)
      timeout                 = optional(number, 60)
      reserved_concurrency    = optional(number)
      batch_size              = optional(number, 10)
      maximum_batching_window = optional(number, 0)
      maximum_concurrency     = optional(number, 5)
      visibility_timeout      = optional(number)
      environment             = optional(map(string), {})
    }), {})
    transform = optional(object({
      memory_size          = optional(number, 1024)
      timeout              = optional(number, 900)
      reserved_concurrency = optional(number)
      # One notification is one object; 3 objects per batch is what the default pool of
      # 4 connections loads side by side (FERRY_DB_MAX_CONNECTIONS minus one).
      batch_size              = optional(number, 3)
      maximum_batching_window = optional(number, 0)
      maximum_concurrency     = optional(number, 2)
      visibility_timeout      = optional(number)
      environment             = optional(map(string), {})
    }), {})
    rollup = optional(object({
      memory_size = optional(number, 512)
      timeout     = optional(number, 300)
      # One tick at a time: a tick still running when the next is due makes the next one
      # a throttle, which the schedule drops.
      reserved_concurrency = optional(number, 1)
      environment          = optional(map(string), {})
    }), {})
    fanout = optional(object({
      memory_size = optional(number, 256)
      # Above FERRY_FANOUT_BUDGET (50 s) + 2 x FERRY_WEBHOOK_TIMEOUT (15 s).
      timeout = optional(number, 120)
      # More instances do not deliver faster than the per-endpoint bound; one slot more
      # than the queue's maximum_concurrency keeps the sweep from being throttled by nudges.
      reserved_concurrency    = optional(number, 3)
      batch_size              = optional(number, 10)
      maximum_batching_window = optional(number, 0)
      maximum_concurrency     = optional(number, 2)
      visibility_timeout      = optional(number)
      environment             = optional(map(string), {})
    }), {})
    query = optional(object({
      memory_size = optional(number, 512)
      # A caller waits for the answer; API Gateway's HTTP APIs give up after 30 s too.
      timeout = optional(number, 30)
      # Anyone can send requests to the URL, and each one reaches the database (if only to
      # check its key), so the instances are capped: 10 x FERRY_DB_MAX_CONNECTIONS at most.
      # Requests beyond the cap are answered 429 by Lambda.
      reserved_concurrency = optional(number, 10)
      environment          = optional(map(string), {})
    }), {})
  })
  default  = {}
  nullable = false

  validation {
    condition = alltrue([
      for f in [var.functions.ingest, var.functions.transform, var.functions.rollup, var.functions.fanout, var.functions.query] :
      f.memory_size >= 128 && f.memory_size <= 10240 && floor(f.memory_size) == f.memory_size
    ])
    error_message = "functions.*.memory_size must be a whole number of MB from 128 to 10240."
  }

  validation {
    condition = alltrue([
      for f in [var.functions.ingest, var.functions.transform, var.functions.rollup, var.functions.fanout, var.functions.query] :
      f.timeout >= 1 && f.timeout <= 900 && floor(f.timeout) == f.timeout
    ])
    error_message = "functions.*.timeout must be a whole number of seconds from 1 to 900 (the Lambda maximum)."
  }

  validation {
    condition = alltrue([
      for f in [var.functions.ingest, var.functions.transform, var.functions.rollup, var.functions.fanout, var.functions.query] :
      f.reserved_concurrency == null ? true : f.reserved_concurrency >= 0
    ])
    error_message = "functions.*.reserved_concurrency must be null (unreserved) or at least 0."
  }

  validation {
    condition     = var.functions.rollup.reserved_concurrency == null ? true : var.functions.rollup.reserved_concurrency >= 1
    error_message = "functions.rollup.reserved_concurrency must be at least 1 (0 would stop the rollup); 1 keeps ticks from overlapping."
  }

  validation {
    condition     = var.functions.query.reserved_concurrency == null ? true : var.functions.query.reserved_concurrency >= 1
    error_message = "functions.query.reserved_concurrency must be null (unreserved: no cap) or at least 1 (0 would answer every request with 429)."
  }

  validation {
    condition = alltrue([
      for f in [var.functions.ingest, var.functions.transform, var.functions.fanout] :
      f.maximum_concurrency >= 2 && f.maximum_concurrency <= 1000
    ])
    error_message = "functions.*.maximum_concurrency must be from 2 (the SQS event source mapping minimum) to 1000."
  }

  validation {
    # A reserved concurrency below the mapping's cap turns the difference into throttles.
    condition = alltrue([
      for f in [var.functions.ingest, var.functions.transform, var.functions.fanout] :
      f.reserved_concurrency == null ? true : f.reserved_concurrency >= f.maximum_concurrency
    ])
    error_message = "functions.*.reserved_concurrency, when set, must be at least that function's maximum_concurrency."
  }

  validation {
    condition = alltrue([
      for f in [var.functions.ingest, var.functions.transform, var.functions.fanout] :
      f.batch_size >= 1 && f.batch_size <= 10000 && (f.batch_size <= 10 || f.maximum_batching_window >= 1)
    ])
    error_message = "functions.*.batch_size must be from 1 to 10000, and above 10 only with a maximum_batching_window of at least 1 second."
  }

  validation {
    condition = alltrue([
      for f in [var.functions.ingest, var.functions.transform, var.functions.fanout] :
      f.maximum_batching_window >= 0 && f.maximum_batching_window <= 300
    ])
    error_message = "functions.*.maximum_batching_window must be from 0 to 300 seconds."
  }

  validation {
    # AWS: the visibility timeout should be at least six times the function timeout, or a
    # batch still being worked on becomes visible again and is delivered twice.
    condition = alltrue([
      for f in [var.functions.ingest, var.functions.transform, var.functions.fanout] :
      f.visibility_timeout == null ? true : (f.visibility_timeout >= 6 * f.timeout && f.visibility_timeout <= 43200)
    ])
    error_message = "functions.*.visibility_timeout must be at least 6 x that function's timeout and at most 43200 seconds."
  }

  validation {
    condition = alltrue([
      for f in [var.functions.ingest, var.functions.transform, var.functions.rollup, var.functions.fanout, var.functions.query] :
      !contains(keys(f.environment), "DATABASE_URL")
    ])
    error_message = "functions.*.environment must not contain DATABASE_URL: the functions read the database credentials from the secret (database_secret_arn)."
  }

  validation {
    # The keyring comes from the secret only: FERRY_WEBHOOK_KEYS here would put key material in
    # the functions' configuration, _FILE would mean a key file in the package, and an ARN
    # here would override the module's with a secret fanout's role is not granted.
    condition = alltrue([
      for f in [var.functions.ingest, var.functions.transform, var.functions.rollup, var.functions.fanout, var.functions.query] :
      length(setintersection(keys(f.environment), ["FERRY_WEBHOOK_KEYS", "FERRY_WEBHOOK_KEYS_FILE", "FERRY_WEBHOOK_KEYS_SECRET_ARN"])) == 0
    ])
    error_message = "functions.*.environment must not contain FERRY_WEBHOOK_KEYS, FERRY_WEBHOOK_KEYS_FILE or FERRY_WEBHOOK_KEYS_SECRET_ARN: fanout reads the webhook keyring from the secret (webhook_keys_secret_arn)."
  }
}

variable "environment" {
  description = "Environment variables for every function (e.g. RUST_LOG, FERRY_DB_MAX_CONNECTIONS), merged over the module's own and under functions.<fn>.environment."
  type        = map(string)
  default     = {}
  nullable    = false

  validation {
    condition     = !contains(keys(var.environment), "DATABASE_URL")
    error_message = "environment must not contain DATABASE_URL: the functions read the database credentials from the secret (database_secret_arn)."
  }

  validation {
    condition     = length(setintersection(keys(var.environment), ["FERRY_WEBHOOK_KEYS", "FERRY_WEBHOOK_KEYS_FILE", "FERRY_WEBHOOK_KEYS_SECRET_ARN"])) == 0
    error_message = "environment must not contain FERRY_WEBHOOK_KEYS, FERRY_WEBHOOK_KEYS_FILE or FERRY_WEBHOOK_KEYS_SECRET_ARN: fanout reads the webhook keyring from the secret (webhook_keys_secret_arn)."
  }
}

variable "query_cors_origins" {
  description = "Origins a browser may call the query API from (e.g. \"https://shop.example\"), or [\"*\"] for any: passed to query as FERRY_QUERY_CORS_ORIGINS, comma-separated. Empty: the function sends no CORS headers, so only non-browser clients and same-origin pages can use it."
  type        = list(string)
  default     = []
  nullable    = false

  validation {
    # What the function accepts: scheme://host[:port], no path and no trailing slash (a
    # browser's Origin header never has one), or *.
    condition     = alltrue([for o in var.query_cors_origins : o == "*" || can(regex("^https?://[^/\\s,*]+$", o))])
    error_message = "query_cors_origins must hold origins as browsers send them, scheme://host[:port] (http or https, no path, no trailing slash), or \"*\"."
  }
}

variable "database_secret_arn" {
  description = "ARN of the Secrets Manager secret holding the database credentials: a postgres:// URL, or RDS-style JSON (username, password, optionally host, port, dbname). Passed as FERRY_DATABASE_SECRET_ARN."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:[A-Za-z0-9/_+=.@-]+$", var.database_secret_arn))
    error_message = "database_secret_arn must be a Secrets Manager secret ARN (arn:aws:secretsmanager:<region>:<account>:secret:<name>)."
  }
}

variable "database_host" {
  description = "Database host for secrets that hold no host (e.g. an RDS master secret): sets FERRY_DATABASE_HOST. null leaves it unset."
  type        = string
  default     = null
}

variable "database_port" {
  description = "Database port for secrets that hold no port: sets FERRY_DATABASE_PORT. null leaves it unset."
  type        = number
  default     = null

  validation {
    condition     = var.database_port == null ? true : (var.database_port >= 1 && var.database_port <= 65535 && floor(var.database_port) == var.database_port)
    error_message = "database_port must be a port number from 1 to 65535."
  }
}

variable "database_name" {
  description = "Database name for secrets that hold no dbname: sets FERRY_DATABASE_NAME. null leaves it unset."
  type        = string
  default     = null
}

variable "database_sslmode" {
  description = "libpq sslmode for URLs built from a JSON secret (e.g. \"require\" for RDS): sets FERRY_DATABASE_SSLMODE. null leaves it unset."
  type        = string
  default     = null

  validation {
    condition     = var.database_sslmode == null ? true : contains(["disable", "allow", "prefer", "require", "verify-ca", "verify-full"], var.database_sslmode)
    error_message = "database_sslmode must be one of disable, allow, prefer, require, verify-ca, verify-full."
  }
}

variable "kms_key_arn" {
  description = "Customer-managed KMS key that encrypts the database secret, if it is not the AWS-managed aws/secretsmanager key. Grants kms:Decrypt through Secrets Manager only."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_arn == null ? true : can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[a-zA-Z0-9-]+$", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>), not an alias."
  }
}

variable "webhook_keys_secret_arn" {
  description = "ARN of the Secrets Manager secret holding the webhook keyring: entries \"<key id>:<base64 of 32 bytes>\" separated by commas or whitespace (ferry secrets new-key <id> prints one); the first seals new signing secrets, every one opens. Passed to fanout only, as FERRY_WEBHOOK_KEYS_SECRET_ARN; only fanout's role is granted secretsmanager:GetSecretValue on it."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:[A-Za-z0-9/_+=.@-]+$", var.webhook_keys_secret_arn))
    error_message = "webhook_keys_secret_arn must be a Secrets Manager secret ARN (arn:aws:secretsmanager:<region>:<account>:secret:<name>)."
  }
}

variable "webhook_keys_kms_key_arn" {
  description = "Customer-managed KMS key that encrypts the webhook keyring secret, if it is not the AWS-managed aws/secretsmanager key. Grants fanout's role (only) kms:Decrypt through Secrets Manager only."
  type        = string
  default     = null

  validation {
    condition     = var.webhook_keys_kms_key_arn == null ? true : can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[a-zA-Z0-9-]+$", var.webhook_keys_kms_key_arn))
    error_message = "webhook_keys_kms_key_arn must be a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>), not an alias."
  }
}

variable "vpc_config" {
  description = "Run the functions in these subnets with these security groups (to reach a database in a VPC). They then need a route to Secrets Manager, SQS, S3 and, for fanout, the partners' endpoints (NAT or VPC endpoints). null: no VPC."
  type = object({
    subnet_ids         = list(string)
    security_group_ids = list(string)
  })
  default = null

  validation {
    condition = var.vpc_config == null ? true : (
      length(var.vpc_config.subnet_ids) > 0 && length(var.vpc_config.security_group_ids) > 0 &&
      alltrue([for s in var.vpc_config.subnet_ids : can(regex("^subnet-[0-9a-f]+$", s))]) &&
      alltrue([for g in var.vpc_config.security_group_ids : can(regex("^sg-[0-9a-f]+$", g))])
    )
    error_message = "vpc_config needs at least one subnet id (subnet-...) and at least one security group id (sg-...)."
  }
}

variable "queue_max_receive_count" {
  description = "Deliveries of a message before SQS moves it to the queue's dead-letter queue."
  type        = number
  default     = 5
  nullable    = false

  validation {
    condition     = var.queue_max_receive_count >= 1 && var.queue_max_receive_count <= 1000 && floor(var.queue_max_receive_count) == var.queue_max_receive_count
    error_message = "queue_max_receive_count must be a whole number from 1 to 1000."
  }
}

variable "create_dlq_redrive_allow_policy" {
  description = "Restrict each dead-letter queue to its own source queue (a redrive allow policy). Off only where the API lacks it (some emulators, as terraform-aws-modules/sqs allows for some regions)."
  type        = bool
  default     = true
  nullable    = false
}

variable "queue_message_retention_seconds" {
  description = "How long the main queues keep a message. Keep FERRY_LEDGER_RETENTION (default 15 days) longer than this."
  type        = number
  default     = 345600
  nullable    = false

  validation {
    condition     = var.queue_message_retention_seconds >= 60 && var.queue_message_retention_seconds <= 1209600
    error_message = "queue_message_retention_seconds must be from 60 to 1209600 (14 days)."
  }
}

variable "dlq_message_retention_seconds" {
  description = "How long the dead-letter queues keep a message; the 14-day maximum gives operators the most time to redrive."
  type        = number
  default     = 1209600
  nullable    = false

  validation {
    condition     = var.dlq_message_retention_seconds >= 60 && var.dlq_message_retention_seconds <= 1209600
    error_message = "dlq_message_retention_seconds must be from 60 to 1209600 (14 days)."
  }
}

variable "bucket_name" {
  description = "Name of the bucket created for batch files. null: \"<name_prefix>-batches-\" plus a unique suffix."
  type        = string
  default     = null

  validation {
    condition     = var.bucket_name == null ? true : can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name must be a valid S3 bucket name (3-63 lowercase letters, digits, dots, hyphens)."
  }
}

variable "bucket_force_destroy" {
  description = "Let terraform destroy delete the bucket with its objects. Leave false in production."
  type        = bool
  default     = false
  nullable    = false
}

variable "bucket_noncurrent_version_expiration_days" {
  description = "Days after which overwritten or deleted versions of batch files are removed (current objects stay for backfills)."
  type        = number
  default     = 30
  nullable    = false

  validation {
    condition     = var.bucket_noncurrent_version_expiration_days >= 1
    error_message = "bucket_noncurrent_version_expiration_days must be at least 1."
  }
}

variable "schedule_expression" {
  description = "When rollup (the tick) and fanout (the sweep) run, as an EventBridge Scheduler expression."
  type        = string
  default     = "rate(1 minute)"
  nullable    = false

  validation {
    condition     = can(regex("^(rate|cron)\\(.+\\)$", var.schedule_expression))
    error_message = "schedule_expression must be a rate(...) or cron(...) expression."
  }
}

variable "log_retention_days" {
  description = "Retention of the functions' CloudWatch log groups, in days."
  type        = number
  default     = 30
  nullable    = false

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be one of 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653."
  }
}

variable "create_alarm_topic" {
  description = "Create an SNS topic (encrypted with a key of its own that CloudWatch may use) as the alarms' action; subscribe to it outside the module."
  type        = bool
  default     = false
  nullable    = false
}

variable "alarm_topic_arn" {
  description = "An existing SNS topic for the alarms' actions (with create_alarm_topic, both are notified). null: none."
  type        = string
  default     = null

  validation {
    condition     = var.alarm_topic_arn == null ? true : can(regex("^arn:aws[a-z-]*:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]+$", var.alarm_topic_arn))
    error_message = "alarm_topic_arn must be an SNS topic ARN."
  }
}

variable "queue_age_alarm_seconds" {
  description = "Alarm when the oldest message of a main queue is older than this many seconds."
  type        = number
  default     = 900
  nullable    = false

  validation {
    condition     = var.queue_age_alarm_seconds >= 60
    error_message = "queue_age_alarm_seconds must be at least 60."
  }
}

variable "tags" {
  description = "Tags for every taggable resource (on top of the provider's default_tags)."
  type        = map(string)
  default     = {}
  nullable    = false
}
