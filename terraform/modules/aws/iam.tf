# One execution role per function, each allowed exactly what that function does. The log
# groups are created here, so no role needs logs:CreateLogGroup.

locals {
  # Filtered rather than a conditional: the three statements differ in shape.
  vpc_statements = [for s in [
    {
      # Describe* calls support no resource-level permissions: AWS requires "*".
      Sid      = "VpcDescribe"
      Effect   = "Allow"
      Action   = ["ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets"]
      Resource = "*"
    },
    {
      # Lambda creates the function's network interfaces in the given subnets and
      # security groups only.
      Sid    = "VpcCreateInterfaces"
      Effect = "Allow"
      Action = "ec2:CreateNetworkInterface"
      Resource = concat(
        ["arn:${local.partition}:ec2:${local.region}:${local.account_id}:network-interface/*"],
        [for s in try(var.vpc_config.subnet_ids, []) : "arn:${local.partition}:ec2:${local.region}:${local.account_id}:subnet/${s}"],
        [for g in try(var.vpc_config.security_group_ids, []) : "arn:${local.partition}:ec2:${local.region}:${local.account_id}:security-group/${g}"],
      )
    },
    {
      # Interface ids are assigned by EC2 at creation and unknown here; this account's
      # interfaces in this region are the narrowest scope that works.
      Sid      = "VpcManageInterfaces"
      Effect   = "Allow"
      Action   = ["ec2:DeleteNetworkInterface", "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses"]
      Resource = "arn:${local.partition}:ec2:${local.region}:${local.account_id}:network-interface/*"
    },
  ] : s if var.vpc_config != null]

  kms_statements = var.kms_key_arn == null ? [] : [{
    Sid      = "DecryptDatabaseSecret"
    Effect   = "Allow"
    Action   = "kms:Decrypt"
    Resource = var.kms_key_arn
    # Only for Secrets Manager's decryption of the secret, not direct use of the key.
    Condition = { StringEquals = { "kms:ViaService" = "secretsmanager.${local.region}.amazonaws.com" } }
  }]

  # The webhook keyring: read by fanout alone, the only function that opens sealed signing
  # secrets. Its customer-managed key, if any, the same way as the database secret's.
  keyring_statements = concat(
    [{
      Sid      = "ReadWebhookKeys"
      Effect   = "Allow"
      Action   = "secretsmanager:GetSecretValue"
      Resource = var.webhook_keys_secret_arn
    }],
    var.webhook_keys_kms_key_arn == null ? [] : [{
      Sid       = "DecryptWebhookKeys"
      Effect    = "Allow"
      Action    = "kms:Decrypt"
      Resource  = var.webhook_keys_kms_key_arn
      Condition = { StringEquals = { "kms:ViaService" = "secretsmanager.${local.region}.amazonaws.com" } }
    }],
  )

  policy_statements = {
    for name in keys(local.fn) : name => concat(
      [
        {
          Sid      = "WriteOwnLogs"
          Effect   = "Allow"
          Action   = ["logs:CreateLogStream", "logs:PutLogEvents"]
          Resource = "${aws_cloudwatch_log_group.fn[name].arn}:*"
        },
        {
          Sid      = "ReadDatabaseSecret"
          Effect   = "Allow"
          Action   = "secretsmanager:GetSecretValue"
          Resource = var.database_secret_arn
        },
      ],
      local.kms_statements,
      # Filtered rather than a conditional: the two statements differ in shape.
      [for s in local.keyring_statements : s if contains(local.keyring_functions, name)],
      contains(local.queue_functions, name) ? [{
        Sid      = "ConsumeOwnQueue"
        Effect   = "Allow"
        Action   = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility"]
        Resource = aws_sqs_queue.main[name].arn
      }] : [],
      contains(local.nudging_functions, name) ? [{
        Sid      = "NudgeFanout"
        Effect   = "Allow"
        Action   = "sqs:SendMessage"
        Resource = aws_sqs_queue.main["fanout"].arn
      }] : [],
      name == "transform" ? [
        {
          Sid      = "ReadBatchFiles"
          Effect   = "Allow"
          Action   = ["s3:GetObject", "s3:GetObjectVersion"]
          Resource = "${aws_s3_bucket.batches.arn}/*"
        },
        {
          # ferry backfill lists a prefix; a missing key then reads as 404, not 403.
          Sid      = "ListBatchFiles"
          Effect   = "Allow"
          Action   = ["s3:ListBucket"]
          Resource = aws_s3_bucket.batches.arn
        },
      ] : [],
      local.vpc_statements,
    )
  }
}

resource "aws_iam_role" "fn" {
  for_each = local.fn

  name        = each.value.name
  description = "ferry ${each.key} function"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "lambda.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
  tags = var.tags
}

resource "aws_iam_role_policy" "fn" {
  for_each = local.fn

  name = "${each.value.name}-access"
  role = aws_iam_role.fn[each.key].id
  policy = jsonencode({
    Version   = "2012-10-17"
    Statement = local.policy_statements[each.key]
  })

  lifecycle {
    # Every role reads the database secret; the keyring must be readable by fanout alone.
    # (A precondition, not a validation: the module still accepts Terraform 1.5, where a
    # validation cannot name a second variable.)
    precondition {
      condition     = var.webhook_keys_secret_arn != var.database_secret_arn
      error_message = "webhook_keys_secret_arn must be a secret of its own, not database_secret_arn: every function reads that one, and only fanout may read the keyring."
    }
  }
}
