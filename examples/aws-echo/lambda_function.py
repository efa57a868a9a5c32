# The AWS Lambda Python convention: lambda_function.lambda_handler(event,
# context), the default handler, so it needs no manifest. It returns what it
# was given, to show what a handler sees.


def lambda_handler(event, context):
    return {
        "event": event,
        "context": {
            "function_name": context.function_name,
            "function_version": context.function_version,
            "memory_limit_in_mb": context.memory_limit_in_mb,
            "invoked_function_arn": context.invoked_function_arn,
            "aws_request_id": context.aws_request_id,
            "log_group_name": context.log_group_name,
            "log_stream_name": context.log_stream_name,
            "remaining_time_in_millis": context.get_remaining_time_in_millis(),
        },
    }
