# query's public HTTPS endpoint. Lambda authenticates nobody (authorization_type NONE): the
# function itself checks each request's API key (Authorization: Bearer fy_live_...) against
# the api_keys table, and answers CORS preflights from FERRY_QUERY_CORS_ORIGINS, so the URL
# has no cors block (with one, Lambda would answer preflights and set the headers itself).
#
# With NONE, the provider also adds the function's resource policy statements that let
# anyone call the URL: lambda:InvokeFunctionUrl (statement FunctionURLAllowPublicAccess,
# every provider version) and, from hashicorp/aws 6.28.0 on, lambda:InvokeFunction limited to
# calls through the URL (FunctionURLAllowInvokeAction), which URLs created since October 2025
# require as well. With an older provider, add the second one by hand (see README.md).
resource "aws_lambda_function_url" "query" {
  #checkov:skip=CKV_AWS_258:The query API is public by design: the function authenticates every request with a per-tenant API key (stored hashed in the api_keys table); AWS_IAM would require callers to sign with AWS credentials, which browsers and partners do not have.
  function_name      = aws_lambda_function.fn["query"].function_name
  authorization_type = "NONE"
  # lambda_http answers with whole responses.
  invoke_mode = "BUFFERED"
}
