# The bucket producers write batch files to; every new object is announced on the
# transform queue, which brings retries and a dead-letter queue that direct S3 -> Lambda
# invocations lack.

resource "aws_s3_bucket" "batches" {
  #checkov:skip=CKV_AWS_18:Access logging needs a second bucket; object-level audit belongs to the account's CloudTrail data events.
  #checkov:skip=CKV_AWS_144:Cross-region replication is a disaster-recovery decision for the platform team; the loaded events live in PostgreSQL.
  #checkov:skip=CKV_AWS_145:SSE-S3 (AES256) is on; a KMS key would also need kms:Decrypt for the transform role and key policy grants for producers.
  bucket        = var.bucket_name
  bucket_prefix = var.bucket_name == null ? "${var.name_prefix}-batches-" : null
  force_destroy = var.bucket_force_destroy
  tags          = var.tags
}

resource "aws_s3_bucket_public_access_block" "batches" {
  bucket                  = aws_s3_bucket.batches.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "batches" {
  bucket = aws_s3_bucket.batches.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

# transform loads each object version once; versioning keeps an overwritten file's
# earlier version readable for the notification that named it.
resource "aws_s3_bucket_versioning" "batches" {
  bucket = aws_s3_bucket.batches.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "batches" {
  bucket = aws_s3_bucket.batches.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "batches" {
  bucket = aws_s3_bucket.batches.id

  # Current objects stay (ferry backfill replays them); old versions and abandoned
  # multipart uploads do not.
  rule {
    id     = "expire-noncurrent-versions"
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days = var.bucket_noncurrent_version_expiration_days
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  depends_on = [aws_s3_bucket_versioning.batches]
}

resource "aws_s3_bucket_policy" "batches" {
  bucket = aws_s3_bucket.batches.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "DenyInsecureTransport"
      Effect    = "Deny"
      Principal = "*"
      Action    = "s3:*"
      Resource  = [aws_s3_bucket.batches.arn, "${aws_s3_bucket.batches.arn}/*"]
      Condition = { Bool = { "aws:SecureTransport" = "false" } }
    }]
  })

  depends_on = [aws_s3_bucket_public_access_block.batches]
}

resource "aws_s3_bucket_notification" "batches" {
  bucket = aws_s3_bucket.batches.id

  queue {
    queue_arn = aws_sqs_queue.main["transform"].arn
    events    = ["s3:ObjectCreated:*"]
  }

  # S3 sends a test message when the notification is saved and refuses the destination
  # if the queue policy does not let it.
  depends_on = [aws_sqs_queue_policy.transform]
}
